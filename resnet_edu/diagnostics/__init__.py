"""A checker for ResNet code: the mistakes that crash, and those that run but cost
accuracy, parameters or compute.

`diagnose(model, input_shape)` runs one forward and one backward pass on random input and
reports, in plain words, each finding with its reasoning and its fix:

- `forward-error`: the forward pass raised (e.g. `forward` reads an attribute `__init__`
  never set); where, and what the message means.
- `shape-mismatch`: a residual block's main path F(x) and its shortcut give different
  shapes, so y = F(x) + x (He et al. 2015, Eq. 1) cannot be formed; where, and both shapes.
- `unneeded-projection`: a shortcut with weights where the identity would fit (Eq. 2 is
  only needed where the shapes differ; Sec. 3.3, option B).
- `shortcut-activation`: a ReLU (or any nonlinearity, a module or a call in `forward`) on
  the shortcut: on x itself or after the projection's conv, a multiplicative manipulation
  of the shortcut in the sense of the 2016 "Identity Mappings" paper (Sec. 3). A BN-ReLU
  before a projection's 1x1 conv, shared with the branch or the shortcut's own, is the
  pre-activation design (its appendix) and is not reported.
- `branch-ends-in-activation`: the branch F ends in a ReLU before the addition, so F(x) >= 0
  and each block can only add (He et al. 2016, Fig. 4c).
- `no-normalization`: a deep net with no normalization layer anywhere, or a projection
  shortcut without one.
- `bias-before-norm`: a conv or linear layer with a bias feeding BatchNorm, which subtracts
  the per-channel mean and so removes the bias: wasted parameters.
- `softmax-output`: the model returns probabilities; `CrossEntropyLoss` expects logits and
  applies log-softmax itself.
- `imagenet-stem-small-input` / `full-resolution-large-input`: a 4x-downsampling ImageNet
  stem on inputs of 64x64 or less, or no downsampling on inputs of 128x128 or more.
- `train-mode-in-eval` and `grad-in-eval`: with `evaluating=True`, BatchNorm/Dropout layers
  still in train mode, or autograd still recording.
- `gradient-flow`: per-block ratios ||dL/dx_in|| / ||dL/dx_out|| whose product over the
  stack shows the gradient vanishing or exploding on its way to the first block.

Residual blocks are found by what the code computes, not by attribute names: the forward pass
is traced op by op (`resnet_edu.residual_trace`), and every addition of a branch with weight
layers and the tensor it started from (or a function of it) is a residual addition; the
block is the smallest module whose forward makes it.

What it cannot see: a model the tracer cannot look into (TorchScript, data taken out of
torch and back) is reported as such in `report.skipped`; checks after a crash
see only what ran before it; and it cannot tell intent from code, so option C (a projection
on every block, He et al. 2015, Table 3) is reported as `unneeded-projection` with a note
(pass `ignore=("unneeded-projection",)` when you chose it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from ..dataflow import ACTIVATIONS
from ..residual_trace import residual_block_names
from ..shape_trace import Cost, check_input_shape, cost
from .block_checks import (
    find_branch_ending_in_activation,
    find_shortcut_activations,
    find_unneeded_projections,
    find_unnormalized_projections,
    forward_error_finding,
    projection_needed,
)
from .model_checks import (
    DEEP,
    EXPLODING,
    LARGE_INPUT,
    SMALL_INPUT,
    VANISHING,
    find_bias_before_norm,
    find_gradient_problems,
    find_no_normalization,
    find_softmax_output,
    find_stem_problems,
    find_train_mode_layers,
    gradient_verdict,
    is_probability_output,
    stem_downsampling,
)
from .report import BlockRecord, Finding, GradientRatio, Report
from .tracing import run_pass

CHECKS = (
    "forward-error",
    "shape-mismatch",
    "unneeded-projection",
    "shortcut-activation",
    "branch-ends-in-activation",
    "no-normalization",
    "bias-before-norm",
    "softmax-output",
    "imagenet-stem-small-input",
    "full-resolution-large-input",
    "train-mode-in-eval",
    "grad-in-eval",
    "gradient-flow",
)

__all__ = [
    "ACTIVATIONS", "CHECKS", "DEEP", "EXPLODING", "LARGE_INPUT", "SMALL_INPUT", "VANISHING",
    "BlockRecord", "Cost", "Finding", "GradientRatio", "Report", "cost", "diagnose",
    "gradient_verdict", "is_probability_output", "projection_needed", "residual_blocks",
    "stem_downsampling",
]


def residual_blocks(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32),
                    ) -> list[tuple[str, nn.Module]]:
    """The modules that perform a residual addition on a pass over `input_shape`, in order.

    Found by tracing (`resnet_edu.residual_trace`); a module that adds several times is listed
    once. Additions made by the model's own forward are not listed (no smaller module
    holds them; `diagnose` reports them as blocks of the model).
    """
    shape = check_input_shape(input_shape)
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    modules = dict(model.named_modules())
    names = residual_block_names(model, torch.randn(shape, device=device))
    return [(n, modules[n]) for n in names if n in modules and n]


def _limits(record, found_blocks: bool) -> list[str]:
    """What could not be checked, in words, so that less checking is never silent."""
    notes = []
    if record.error is not None:
        notes.append("softmax-output, stem and gradient-flow checks, and the blocks after the "
                     "failure: the forward pass failed")
    elif not record.connected:
        notes.append("block checks: the model could not be traced (its output is not "
                     "connected to its input through torch operations called from Python, as "
                     "with TorchScript or data passed through numpy), so its "
                     "residual additions could not be seen")
    elif not found_blocks:
        notes.append("block checks: the forward pass makes no residual addition (an add of "
                     "a branch with conv/linear layers and the tensor it started from)")
    return notes


def diagnose(model: nn.Module, input_shape: Sequence[int], *, evaluating: bool = False,
             ignore: Collection[str] = (), seed: int = 0) -> Report:
    """Run `model` once forward and backward on random input; report what looks wrong.

    input_shape: (C, H, W) (a batch of 2 is used) or (B, C, H, W), e.g. (3, 32, 32).
    evaluating: say True where you evaluate, to check for train-mode layers and autograd.
    ignore: check names (see `CHECKS`) to leave out, e.g. ("unneeded-projection",).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = check_input_shape(input_shape)
    unknown = set(ignore) - set(CHECKS)
    if unknown:
        raise ValueError(f"ignore must name checks from {CHECKS}, got {sorted(unknown)}")

    findings = find_train_mode_layers(model, evaluating)  # the caller's state, before ours
    record = run_pass(model, shape, seed)
    blocks = record.blocks
    if record.error is not None:
        findings.append(forward_error_finding(record.error, record.error_stack, blocks))
    findings += find_shortcut_activations(blocks)
    shortcuts = dict(model.named_modules())
    findings += find_unneeded_projections(
        blocks, {b.shortcut: sum(p.numel() for p in shortcuts[b.shortcut].parameters())
                 for b in blocks if b.shortcut in shortcuts},
        sum(p.numel() for p in model.parameters()))
    findings += find_branch_ending_in_activation(blocks)
    no_norm = find_no_normalization(record.norm_layers, record.weight_layers)
    findings += no_norm
    if record.norm_layers:  # the branches are normalized: are the projections too?
        findings += find_unnormalized_projections(blocks)
    findings += find_bias_before_norm(record.bias_before_norm)
    if record.output is not None:
        findings += find_softmax_output(record.output)
        first = next((b.input_shape for b in blocks), None)
        findings += find_stem_problems(shape, first)
        findings += find_gradient_problems(record.gradients)
    skipped = [*record.skipped, *_limits(record, bool(blocks))]
    findings = [f for f in findings if f.check not in set(ignore)]
    return Report(type(model).__name__, shape, tuple(findings), tuple(blocks),
                  tuple(record.gradients), tuple(skipped))
