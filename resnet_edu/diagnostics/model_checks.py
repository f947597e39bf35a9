"""Checks on the whole model and its pass: each returns `Finding`s, with the text.

- `bias-before-norm`: conv/linear biases that BatchNorm removes at once.
- `no-normalization`: a deep net with no normalization layer anywhere.
- `softmax-output`, `imagenet-stem-small-input`, `full-resolution-large-input`.
- `train-mode-in-eval`, `grad-in-eval`: evaluating in train mode or with autograd on.
- `gradient-flow`: the gradient vanishing or exploding across the stack of blocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .report import Finding, GradientRatio

TRAIN_ONLY_LAYERS = (_BatchNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
SMALL_INPUT = 64  # a side of 64 px or less: CIFAR (32), STL/Tiny-ImageNet (64)
LARGE_INPUT = 128  # a side of 128 px or more: ImageNet-sized
# a net with this many conv/linear layers or more is deep enough to need normalization
DEEP = 10
# the gradient reaching the first block, as a multiple of the last block's output gradient.
# Correct ResNets grow it with depth at initialization, but slowly: about 7x for ResNet-18,
# 4e3x for ResNet-152 (224x224 input), and on CIFAR, 70x for ResNet-110, 1.5e3x at most for
# ResNet-1202 at width 4 (seeds 0 and 1, post- and pre-activation), far below EXPLODING; a
# cut or gated shortcut makes it vanish over a deep stack.
VANISHING, EXPLODING = 1e-2, 1e5


def stem_downsampling(input_hw: int, first_block_hw: int) -> int:
    """How many times smaller the first block's maps are than the image (1, 2, 4, ...)."""
    return max(1, round(input_hw / max(first_block_hw, 1)))


def is_probability_output(output: torch.Tensor, tol: float = 1e-4) -> bool:
    """Rows of a (B, K) output that are non-negative and sum to 1: softmax was applied."""
    if output.dim() != 2 or output.shape[1] < 2:
        return False
    sums = output.detach().float().sum(dim=1)
    return bool((output >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=tol))


def gradient_verdict(through_stack: float) -> str | None:
    """'vanishing', 'exploding' or None for the gradient ratio over the whole block stack."""
    if through_stack < VANISHING:
        return "vanishing"
    if through_stack > EXPLODING:
        return "exploding"
    return None


# ---------------------------------------------------------------------- the findings


def find_no_normalization(norm_layers: int, weight_layers: int) -> list[Finding]:
    """A deep net in which no normalization layer runs."""
    if norm_layers or weight_layers < DEEP:
        return []
    return [Finding(
        "no-normalization", "the whole model",
        f"{weight_layers} conv/linear layers run and not one normalization layer "
        "(BatchNorm, GroupNorm, LayerNorm...).",
        "every ResNet of He et al. 2015 puts BatchNorm right after each conv (Sec. 3.4). "
        "Without normalization nothing resets the scale: for roughly independent x and "
        "F(x), Var(x + F(x)) = Var(x) + Var(F(x)), so the signal grows block after block at "
        "the usual initialization, and so does the gradient on its way back. Such nets can "
        "be trained without normalization, but with an initialization or a design made for "
        "it (Fixup, Zhang et al. 2019; SkipInit, De & Smith 2020; NF-ResNets, Brock et al. "
        "2021), not as they are here.",
        "add nn.BatchNorm2d after each conv of the branch (conv, BN, ReLU, conv, BN) and "
        "after the projection of each projection shortcut, and set bias=False on those "
        "convs.",
    )]


def find_bias_before_norm(pairs: dict[str, tuple[str, int]]) -> list[Finding]:
    """Layers with a bias whose output goes straight into BatchNorm."""
    if not pairs:
        return []
    wasted = sum(c for _, c in pairs.values())
    return [Finding(
        "bias-before-norm", ", ".join(pairs),
        f"{len(pairs)} layer(s) with bias=True feed BatchNorm directly "
        f"({wasted} wasted parameters).",
        "BatchNorm subtracts each channel's mean, and a per-channel bias only shifts that "
        "mean, so it is removed at once; BatchNorm's own shift (beta) does the job. The bias "
        "still costs parameters, memory and time.",
        "create the conv with bias=False when BatchNorm follows (as torchvision does).",
    )]


def find_softmax_output(output: torch.Tensor) -> list[Finding]:
    """The model returns probabilities instead of logits."""
    if not is_probability_output(output):
        return []
    return [Finding(
        "softmax-output", "the model output",
        "every output row is non-negative and sums to 1: the model applies softmax.",
        "nn.CrossEntropyLoss applies log-softmax itself, so it computes "
        "log softmax(softmax(z)): the 'logits' it sees lie in [0, 1], so the loss cannot get "
        "near 0, and its gradients are squashed (a confidently wrong prediction gets almost "
        "none), so the net learns slower.",
        "return the logits from forward(); apply softmax only where you need probabilities "
        "(e.g. `model(x).softmax(dim=1)` when reporting).",
    )]


def find_stem_problems(input_shape: Sequence[int], first_block: Sequence[int] | None,
                       ) -> list[Finding]:
    """A stem that downsamples a small image 4x, or a large image not at all."""
    if first_block is None or len(input_shape) != 4 or len(first_block) != 4:
        return []
    side = min(input_shape[2], input_shape[3])
    factor = stem_downsampling(input_shape[2], first_block[2])
    seen = f"{first_block[2]}x{first_block[3]}"
    if side <= SMALL_INPUT and factor >= 4:
        return [Finding(
            "imagenet-stem-small-input", "the stem (before the first block)",
            f"the {input_shape[2]}x{input_shape[3]} input reaches the first block as "
            f"{seen} maps ({factor}x smaller on each side).",
            "the 7x7 stride-2 conv + max-pool stem was designed for 224x224 ImageNet images "
            "(He et al. 2015, Table 1: 224 -> 56); on a 32x32 image it leaves 8x8 maps for "
            "the first stage and 1x1 for the last, throwing away most of the detail. The "
            "CIFAR nets of the paper (Sec. 4.2) start with one 3x3 stride-1 conv instead.",
            "use a 3x3 stride-1 conv and no max-pool for small images "
            "(`resnet_edu.models.resnet18_cifar` or `cifar_resnet`).",
        )]
    if side >= LARGE_INPUT and factor == 1:
        return [Finding(
            "full-resolution-large-input", "the stem (before the first block)",
            f"the first block works on full-size {seen} maps.",
            f"ResNets for inputs this size reduce them 4x first (224 -> 56, He et al. 2015, "
            f"Table 1), so every stage here has 16x the activations and the compute. If the "
            f"images are 32x32 CIFAR images resized to {input_shape[2]}, every map is "
            f"{(input_shape[2] * input_shape[3]) // (32 * 32)}x larger than at their own size "
            "and carries no new information.",
            "train at the images' own size with the small-image stem, or use the ImageNet "
            "stem (7x7 stride 2 + max-pool) when the images really are large.",
        )]
    return []


def find_train_mode_layers(model: nn.Module, evaluating: bool) -> list[Finding]:
    """BatchNorm/Dropout in train mode, or autograd recording, while evaluating."""
    if not evaluating:
        return []
    findings = []
    training = [n for n, m in model.named_modules()
                if isinstance(m, TRAIN_ONLY_LAYERS) and m.training]
    if training:
        shown = ", ".join(training[:3]) + (f" and {len(training) - 3} more"
                                           if len(training) > 3 else "")
        findings.append(Finding(
            "train-mode-in-eval", shown,
            f"{len(training)} BatchNorm/Dropout layer(s) are in train mode during evaluation.",
            "in train mode BatchNorm normalizes with the statistics of the current batch (and "
            "updates its running averages), so a test image's prediction depends on the other "
            "images in its batch; Dropout drops units at random.",
            "call model.eval() before evaluating (and model.train() before training again).",
        ))
    if torch.is_grad_enabled():
        findings.append(Finding(
            "grad-in-eval", "the calling code",
            "autograd is recording during evaluation.",
            "every forward pass then keeps its activations for a backward pass that never "
            "comes: more memory and time, and no effect on the result.",
            "wrap the evaluation in `with torch.no_grad():` (or torch.inference_mode()).",
        ))
    return findings


def find_gradient_problems(gradients: Sequence[GradientRatio]) -> list[Finding]:
    """The gradient vanishing or exploding across the stack of blocks."""
    if len(gradients) < 2:
        return []
    through = math.prod(g.ratio for g in gradients)
    verdict = gradient_verdict(through)
    if verdict is None:
        return []
    worst = min(gradients, key=lambda g: g.ratio) if verdict == "vanishing" else \
        max(gradients, key=lambda g: g.ratio)
    return [Finding(
        "gradient-flow", f"the {len(gradients)} blocks from {gradients[-1].block} back to "
        f"{gradients[0].block}",
        f"the gradient is {verdict}: the first block receives {through:.0e} times the "
        f"gradient norm of the last block's output (worst block {worst.block}: "
        f"ratio {worst.ratio:.2f}; see report.gradient_table()).",
        "with an identity shortcut, dL/dx_l = dL/dx_L (1 + d/dx_l sum of F) (He et al. "
        "2016, Eq. 5, exact for pre-activation blocks), so the term dL/dx_L reaches every "
        "early block without passing through any layer; anything that scales, gates or "
        "cuts the shortcut multiplies that term by its factor once per block (Eq. 8, the "
        "gradient of the scaled shortcut's Eq. 7), which compounds over depth.",
        "keep the shortcut a plain identity (no scaling, no gate, no detach) and "
        "normalize inside F; with a working shortcut the gradient through the whole stack "
        f"stays between {VANISHING:g} and {EXPLODING:g} times the last block's, the "
        "thresholds of this check.",
    )]


# ------------------------------------------------------------------------------ diagnose
