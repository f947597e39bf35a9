"""A checker for the mistakes that make ResNet code train worse without crashing.

`diagnose(model, input_shape)` runs one forward and one backward pass on random input and
reports, in plain words, each finding with its reasoning and its fix:

- `forward-error`: the forward pass raised (e.g. `forward` reads an attribute `__init__`
  never set); where, and what the message means.
- `shape-mismatch`: a residual block's main path F(x) and its shortcut give different
  shapes, so y = F(x) + x (He et al. 2015, Eq. 1) cannot be formed; where, and both shapes.
- `unneeded-projection`: a shortcut with weights where the identity would fit (Eq. 2 is
  only needed where the shapes differ; Sec. 3.3, option B).
- `shortcut-activation`: a ReLU (or any nonlinearity) inside a shortcut, which is then no
  longer the clean identity path the 2016 "Identity Mappings" paper argues for (Sec. 3-4).
- `bias-before-norm`: a conv or linear layer with a bias feeding BatchNorm, which subtracts
  the per-channel mean and so removes the bias: wasted parameters.
- `softmax-output`: the model returns probabilities; `CrossEntropyLoss` expects logits and
  applies log-softmax itself.
- `imagenet-stem-small-input`: a 7x7 stride-2 conv + max-pool stem (4x downsampling) on
  inputs of 64x64 or less, so the first stage sees 8x8 maps from a 32x32 image.
- `full-resolution-large-input`: no downsampling before the first stage on inputs of
  128x128 or more (the CIFAR stem on upsampled images): every map is that much larger.
- `train-mode-in-eval` and `grad-in-eval`: with `evaluating=True`, BatchNorm/Dropout layers
  still in train mode, or autograd still recording.
- `gradient-flow`: per-block ratios ||dL/dx_in|| / ||dL/dx_out|| whose product over the
  stack shows the gradient vanishing or exploding on its way to the first block.

Residual blocks are found by type (resnet_edu's and torchvision's blocks) or, for a
student's own block, by an attribute named like a shortcut (`downsample`, `shortcut`,
`skip`, `projection`, `proj`) next to at least one conv layer.

Option C (a projection on every block, He et al. 2015, Table 3) is a deliberate design, but
diagnose cannot tell intent from code: it reports `unneeded-projection` for it too and says
so in the finding. Pass `ignore=("unneeded-projection",)` when you chose option C.

The model is left as it was: train/eval modes, BatchNorm statistics and `.grad` are restored
and the hooks are removed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

CHECKS = (
    "forward-error",
    "shape-mismatch",
    "unneeded-projection",
    "shortcut-activation",
    "bias-before-norm",
    "softmax-output",
    "imagenet-stem-small-input",
    "full-resolution-large-input",
    "train-mode-in-eval",
    "grad-in-eval",
    "gradient-flow",
)
SHORTCUT_NAMES = ("downsample", "shortcut", "skip", "projection", "proj")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
               nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardswish,
               nn.Hardsigmoid, nn.Hardtanh, nn.Softmax)
# a norm that subtracts a per-channel mean over the positions a conv bias is constant on
MEAN_REMOVING_NORMS = (_BatchNorm, _InstanceNorm)
TRAIN_ONLY_LAYERS = (_BatchNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
SMALL_INPUT = 64  # a side of 64 px or less: CIFAR (32), STL/Tiny-ImageNet (64)
LARGE_INPUT = 128  # a side of 128 px or more: ImageNet-sized
# the gradient reaching the first block, as a multiple of the last block's output gradient.
# Post-activation ResNets grow it with depth (about 7x for ResNet-18, 4e3x for ResNet-152 at
# initialization); a cut or gated shortcut makes it vanish over a deep stack.
VANISHING, EXPLODING = 1e-2, 1e5


@dataclass(frozen=True)
class Finding:
    """One problem: which check, where in the model, what, why it matters, and the fix."""

    check: str
    where: str
    what: str
    why: str
    fix: str

    def __str__(self) -> str:
        return (f"[{self.check}] at {self.where}\n  What: {self.what}\n"
                f"  Why:  {self.why}\n  Fix:  {self.fix}")


@dataclass(frozen=True)
class BlockRecord:
    """A residual block as one forward pass saw it (shapes are None where it never got)."""

    name: str
    shortcut: str | None  # the attribute holding the shortcut module, if any
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    main_shape: tuple[int, ...] | None = None  # output of the last main-path layer
    shortcut_shape: tuple[int, ...] | None = None
    shortcut_has_weights: bool = False
    shortcut_activations: tuple[str, ...] = ()


@dataclass(frozen=True)
class GradientRatio:
    """||dL/dx_in|| / ||dL/dx_out|| of one block: below 1 the gradient shrinks through it."""

    block: str
    grad_in: float
    grad_out: float

    @property
    def ratio(self) -> float:
        return self.grad_in / self.grad_out if self.grad_out > 0 else math.inf


@dataclass(frozen=True)
class Report:
    """What `diagnose` found; `str(report)` reads as plain words."""

    model: str
    input_shape: tuple[int, ...]
    findings: tuple[Finding, ...]
    blocks: tuple[BlockRecord, ...] = ()
    gradients: tuple[GradientRatio, ...] = ()
    skipped: tuple[str, ...] = ()  # checks that could not run, with the reason

    @property
    def checks(self) -> tuple[str, ...]:
        """The checks that found something, in order, without repeats."""
        return tuple(dict.fromkeys(f.check for f in self.findings))

    @property
    def gradient_through_stack(self) -> float | None:
        """||dL/d(first block input)|| / ||dL/d(last block output)||, the product of ratios."""
        if not self.gradients:
            return None
        return math.prod(g.ratio for g in self.gradients)

    def __bool__(self) -> bool:  # true when clean
        return not self.findings

    def __str__(self) -> str:
        head = (f"diagnose({self.model}, input {self.input_shape}): "
                f"{len(self.blocks)} residual blocks, ")
        if not self.findings:
            lines = [head + "no findings."]
        else:
            n = len(self.findings)
            lines = [head + f"{n} finding{'s' if n > 1 else ''}:"]
            lines += [f"{i}. {f}" for i, f in enumerate(self.findings, 1)]
        lines += [f"(skipped: {s})" for s in self.skipped]
        return "\n".join(lines)

    __repr__ = __str__

    def block_table(self) -> str:
        """Each block's input and output shape, one line per block."""
        rows = [f"{'block':<14} {'input':<22} output"]
        rows += [f"{b.name:<14} {_fmt(b.input_shape):<22} {_fmt(b.output_shape)}"
                 for b in self.blocks]
        return "\n".join(rows)

    def gradient_table(self) -> str:
        """Per-block gradient norm ratios, one line per block (from the output backwards)."""
        rows = [f"{'block':<14} {'|dL/dx_out|':>12} {'|dL/dx_in|':>12} {'ratio':>7}"]
        rows += [f"{g.block:<14} {g.grad_out:>12.3e} {g.grad_in:>12.3e} {g.ratio:>7.3f}"
                 for g in reversed(self.gradients)]
        return "\n".join(rows)


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else str(tuple(shape))


# ---------------------------------------------------------------- finding the residual blocks


def shortcut_attribute(module: nn.Module) -> str | None:
    """The name of the attribute that holds `module`'s shortcut, or None if it has none."""
    for name in SHORTCUT_NAMES:
        if name in module._modules or name in module.__dict__:
            return name
    return None


def is_residual_block(module: nn.Module) -> bool:
    """A module with a shortcut attribute and at least one conv outside that shortcut."""
    from .blocks import _Block

    if isinstance(module, _Block):
        return True
    attr = shortcut_attribute(module)
    if attr is None:
        return False
    shortcut = module._modules.get(attr)
    inside = {id(m) for m in shortcut.modules()} if isinstance(shortcut, nn.Module) else set()
    return any(isinstance(m, nn.Conv2d) and id(m) not in inside for m in module.modules())


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost residual blocks of `model`, in registration order, with their names."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if any(name.startswith(b + ".") for b, _ in found):
            continue  # a block inside a block is part of it
        if module is not model and is_residual_block(module):
            found.append((name, module))
    return found


def _shortcut_module(block: nn.Module) -> nn.Module | None:
    attr = shortcut_attribute(block)
    value = block._modules.get(attr) if attr else None
    return value if isinstance(value, nn.Module) else None


# ---------------------------------------------------------------------- the recorded pass


@dataclass
class _Trace:
    """What one forward pass did, filled in by hooks."""

    block_names: dict[int, str]
    shortcut_owner: dict[int, str]  # id(shortcut module) -> its block's name
    stack: list[str] = field(default_factory=list)
    block_in: dict[str, tuple[int, ...]] = field(default_factory=dict)
    block_out: dict[str, tuple[int, ...]] = field(default_factory=dict)
    block_main: dict[str, tuple[int, ...]] = field(default_factory=dict)
    shortcut_out: dict[str, tuple[int, ...]] = field(default_factory=dict)
    block_in_tensor: dict[str, torch.Tensor] = field(default_factory=dict)
    block_out_tensor: dict[str, torch.Tensor] = field(default_factory=dict)
    biased: dict[int, tuple[str, torch.Tensor]] = field(default_factory=dict)
    bias_before_norm: dict[str, tuple[str, int]] = field(default_factory=dict)
    first_block_input: tuple[int, ...] | None = None


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _install_hooks(model: nn.Module, trace: _Trace) -> list:
    handles = []
    names = dict(model.named_modules())
    block_prefixes = [(n + ".", n) for n in trace.block_names.values()]
    shortcut_prefixes = {}
    for n, m in names.items():
        if id(m) in trace.shortcut_owner:
            shortcut_prefixes[trace.shortcut_owner[id(m)]] = n

    def owner_block(name: str) -> str | None:
        for prefix, block in block_prefixes:
            if name.startswith(prefix):
                return block
        return None

    for name, module in names.items():
        is_leaf = not module._modules

        def pre(mod: nn.Module, args: tuple, name: str = name) -> None:
            trace.stack.append(name)
            x = _first_tensor(args)
            if x is None:
                return
            if id(mod) in trace.block_names and trace.block_names[id(mod)] == name:
                trace.block_in.setdefault(name, tuple(x.shape))
                trace.block_in_tensor.setdefault(name, x)
                if trace.first_block_input is None:
                    trace.first_block_input = tuple(x.shape)
            if isinstance(mod, MEAN_REMOVING_NORMS) and id(x) in trace.biased:
                producer, tensor = trace.biased[id(x)]
                if tensor is x:
                    trace.bias_before_norm[producer] = (name, x.shape[1])

        def post(mod: nn.Module, args: tuple, out: object, name: str = name,
                 is_leaf: bool = is_leaf) -> None:
            if trace.stack and trace.stack[-1] == name:
                trace.stack.pop()
            y = _first_tensor(out)
            if y is None:
                return
            if id(mod) in trace.block_names and trace.block_names[id(mod)] == name:
                trace.block_out.setdefault(name, tuple(y.shape))
                trace.block_out_tensor.setdefault(name, y)
            if id(mod) in trace.shortcut_owner:
                trace.shortcut_out.setdefault(trace.shortcut_owner[id(mod)], tuple(y.shape))
            if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and \
                    mod.bias is not None:
                trace.biased[id(y)] = (name, y)
            if is_leaf:
                block = owner_block(name)
                sc = shortcut_prefixes.get(block) if block else None
                in_shortcut = sc is not None and (name == sc or name.startswith(sc + "."))
                if block and not in_shortcut and block not in trace.block_out:
                    trace.block_main[block] = tuple(y.shape)

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    return handles


# -------------------------------------------------------------------- the rules (pure)


def projection_needed(input_shape: Sequence[int], output_shape: Sequence[int]) -> bool:
    """True when x of `input_shape` cannot be added to F(x) of `output_shape` as it is."""
    return tuple(input_shape) != tuple(output_shape)


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


def _forward_error_finding(error: BaseException, stack: list[str], blocks: dict[str, BlockRecord],
                           ) -> Finding:
    """Turn an exception from the forward pass into a shape-mismatch or forward-error."""
    block = next((n for n in reversed(stack) if n in blocks), None)
    where = stack[-1] if stack and stack[-1] else "the model's own forward"
    message = f"{type(error).__name__}: {error}"
    record = blocks.get(block) if block else None
    if (record is not None and isinstance(error, RuntimeError)
            and "must match the size" in str(error)):
        main, short = record.main_shape, record.shortcut_shape or record.input_shape
        return Finding(
            "shape-mismatch", block,
            f"the main path gives {_fmt(main)} but the shortcut gives {_fmt(short)}, so "
            f"F(x) + x fails ({message}).",
            "y = F(x) + x (He et al. 2015, Eq. 1) adds the two paths element by element, so "
            "they must have the same channels and the same height and width. "
            + _mismatch_reason(main, short, record),
            _mismatch_fix(main, short, record),
        )
    if isinstance(error, AttributeError):
        return Finding(
            "forward-error", block or where, f"the forward pass raised {message}.",
            "forward() reads an attribute that __init__ never set. Python only notices when "
            "that line runs, so the same class can work for some blocks (e.g. where an `or` "
            "short-circuits) and crash for others.",
            "store the value in __init__ (e.g. `self.in_channels = in_channels`) or compute "
            "it from a layer that exists (e.g. `self.conv1.in_channels`).",
        )
    return Finding(
        "forward-error", block or where, f"the forward pass raised {message} in {where}.",
        "a layer received a tensor it was not built for; the message names what it expected "
        "and what came.",
        "compare the layer's in_channels/in_features with the shape printed by "
        "`report.block_table()`; in a `_make_layer` the next block's input width must be the "
        "previous block's output width.",
    )


def _mismatch_reason(main: tuple | None, short: tuple | None, record: BlockRecord) -> str:
    if main is None or short is None or len(main) != 4 or len(short) != 4:
        return ""
    parts = []
    if main[2:] != short[2:]:
        parts.append(f"The main path turns {record.input_shape[2]}x{record.input_shape[3]} "
                     f"into {main[2]}x{main[3]} (a strided conv) but the shortcut gives "
                     f"{short[2]}x{short[3]}.")
    if main[1] != short[1]:
        parts.append(f"The main path has {main[1]} channels, the shortcut {short[1]}.")
    return " ".join(parts)


def _mismatch_fix(main: tuple | None, short: tuple | None, record: BlockRecord) -> str:
    if main and short and len(main) == 4 and len(short) == 4 and main[2] and short[2]:
        stride = max(1, round(record.input_shape[2] / main[2])) if record.input_shape else 1
        if record.shortcut_shape is not None:
            return (f"build the shortcut as a 1x1 conv with stride={stride} and "
                    f"{main[1]} output channels, then BatchNorm (option B, "
                    "`resnet_edu.shortcuts.make_downsample`); nothing else in it.")
        return (f"this block needs a projection: add a shortcut module (1x1 conv, "
                f"stride={stride}, {main[1]} channels, then BatchNorm) where the shapes change.")
    return "make the shortcut produce exactly the main path's output shape."


def find_shortcut_activations(blocks: Sequence[BlockRecord]) -> list[Finding]:
    """A nonlinearity inside a shortcut module."""
    bad = [b for b in blocks if b.shortcut_activations]
    if not bad:
        return []
    kinds = sorted({a for b in bad for a in b.shortcut_activations})
    return [Finding(
        "shortcut-activation", ", ".join(b.name for b in bad),
        f"the shortcut contains {', '.join(kinds)}.",
        "the shortcut should pass x (or a linear projection of it) unchanged: He et al. 2016 "
        "('Identity Mappings', Sec. 3-4) show that anything nonlinear on it (gates, ReLU, "
        "dropout) hampers how the signal and gradient travel through a deep stack; a ReLU "
        "also throws away every negative value of x.",
        "remove the activation from the shortcut: 1x1 conv + BatchNorm where a projection is "
        "needed, nothing (identity) elsewhere.",
    )]


def find_unneeded_projections(blocks: Sequence[BlockRecord]) -> list[Finding]:
    """Shortcuts with weights on blocks whose input already has the output's shape."""
    bad = [b for b in blocks if b.shortcut_has_weights and b.input_shape is not None
           and b.output_shape is not None
           and not projection_needed(b.input_shape, b.output_shape)]
    if not bad:
        return []
    all_blocks = all(b.shortcut_has_weights for b in blocks)
    note = (" Every block has one: this is option C of He et al. 2015 (Table 3), a deliberate "
            "choice there (slightly better, many more parameters); if you chose it, pass "
            "ignore=('unneeded-projection',)." if all_blocks and len(bad) > 1 else "")
    return [Finding(
        "unneeded-projection", ", ".join(b.name for b in bad),
        f"{len(bad)} block(s) project x with a 1x1 conv although x already has the output "
        "shape.",
        "a projection W_s x is only needed where the shapes differ (He et al. 2015, Eq. 2, "
        "option B); elsewhere the identity is free, has no parameters, and keeps the gradient "
        "path clean." + note,
        "build the projection only when stride != 1 or in_channels != out_channels "
        "(`resnet_edu.shortcuts.needs_projection`), and use the identity otherwise.",
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
        "log softmax(softmax(z)): the 'logits' it sees lie in [0, 1], the loss cannot get "
        "near 0 and its gradients are squashed, so the net trains slower and to a worse "
        "accuracy.",
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
        "2016, Eq. 5), so the gradient reaches early blocks undiminished; anything that "
        "scales, gates or cuts the shortcut multiplies the gradient by that factor once per "
        "block (Eq. 7), which compounds over depth.",
        "keep the shortcut a plain identity (no scaling, no gate, no detach) and "
        "normalize inside F; the ratio per block should stay near 1.",
    )]


# ------------------------------------------------------------------------------ diagnose


def _check_input_shape(input_shape: object) -> tuple[int, ...]:
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if (shape is None or len(shape) not in (3, 4)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        raise ValueError(
            f"input_shape must be (C, H, W) or (B, C, H, W) of positive ints, "
            f"got {input_shape!r}")
    return shape if len(shape) == 4 else (2, *shape)


def diagnose(model: nn.Module, input_shape: Sequence[int], *, evaluating: bool = False,
             ignore: Collection[str] = (), seed: int = 0) -> Report:
    """Run `model` once forward and backward on random input; report what looks wrong.

    input_shape: (C, H, W) (a batch of 2 is used) or (B, C, H, W), e.g. (3, 32, 32).
    evaluating: say True where you evaluate, to check for train-mode layers and autograd.
    ignore: check names (see `CHECKS`) to leave out, e.g. ("unneeded-projection",).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    unknown = set(ignore) - set(CHECKS)
    if unknown:
        raise ValueError(f"ignore must name checks from {CHECKS}, got {sorted(unknown)}")

    findings = find_train_mode_layers(model, evaluating)  # the caller's state, before ours
    found = residual_blocks(model)
    shortcuts = {name: _shortcut_module(m) for name, m in found}
    trace = _Trace(
        block_names={id(m): name for name, m in found},
        shortcut_owner={id(s): name for name, s in shortcuts.items() if s is not None},
    )

    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_modes = {m: m.training for m in model.modules()}
    saved_grads = [p.grad for p in params]
    handles = _install_hooks(model, trace)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device)
    output, error, error_stack = None, None, []
    gradients: list[GradientRatio] = []
    skipped: list[str] = []
    try:
        model.train()  # the mode the gradient check is about; BN uses batch statistics
        with torch.enable_grad():
            try:
                output = _first_tensor(model(x))
            except Exception as e:  # the student's model failed: report it, don't raise
                error, error_stack = e, list(trace.stack)
            if output is not None:
                grad_norms: dict[str, float] = {}
                for name in trace.block_in_tensor:
                    for key, t in (("in:" + name, trace.block_in_tensor[name]),
                                   ("out:" + name, trace.block_out_tensor.get(name))):
                        if t is not None and t.requires_grad:
                            t.register_hook(lambda g, key=key: grad_norms.__setitem__(
                                key, float(g.detach().float().norm())))
                if output.requires_grad:
                    if output.dim() == 2:
                        labels = torch.randint(0, output.shape[1], (shape[0],),
                                               generator=gen).to(device)
                        loss = nn.functional.cross_entropy(output, labels)
                    else:
                        loss = output.float().pow(2).mean()
                    loss.backward()
                    for name in trace.block_in_tensor:
                        g_in, g_out = grad_norms.get("in:" + name), grad_norms.get("out:" + name)
                        if g_in is not None and g_out is not None:
                            gradients.append(GradientRatio(name, g_in, g_out))
                else:
                    skipped.append("gradient-flow: the output does not require grad")
    finally:
        for h in handles:
            h.remove()
        model.load_state_dict(saved_state)
        for m, mode in saved_modes.items():
            m.training = mode
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g

    blocks = tuple(
        BlockRecord(
            name, shortcut_attribute(m), trace.block_in.get(name), trace.block_out.get(name),
            trace.block_main.get(name), trace.shortcut_out.get(name),
            shortcut_has_weights=shortcuts[name] is not None
            and any(True for _ in shortcuts[name].parameters()),
            shortcut_activations=tuple(dict.fromkeys(
                type(a).__name__ for a in (shortcuts[name].modules() if shortcuts[name]
                                           is not None else ()) if isinstance(a, ACTIVATIONS))),
        )
        for name, m in found
    )
    if error is not None:
        findings.append(_forward_error_finding(error, error_stack, {b.name: b for b in blocks}))
        skipped.append("softmax-output, stem and gradient-flow checks: the forward pass failed")
    findings += find_shortcut_activations(blocks)
    findings += find_unneeded_projections(blocks)
    findings += find_bias_before_norm(trace.bias_before_norm)
    if output is not None:
        findings += find_softmax_output(output)
        findings += find_stem_problems(shape, trace.first_block_input)
        findings += find_gradient_problems(gradients)
    if not found:
        skipped.append("block checks: no residual blocks found (blocks are recognized by a "
                       f"shortcut attribute named one of {', '.join(SHORTCUT_NAMES)})")
    findings = [f for f in findings if f.check not in set(ignore)]
    return Report(type(model).__name__, shape, tuple(findings), blocks, tuple(gradients),
                  tuple(skipped))


# ------------------------------------------------------------------------- cost counting


@dataclass(frozen=True)
class Cost:
    """Per image: multiply-adds of conv/linear layers, and activation values they produce."""

    macs: int
    activations: int


def cost(model: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Multiply-adds and activation count of one image's forward pass (conv and linear)."""
    shape = _check_input_shape(input_shape)
    shape = (1, *shape[1:])
    totals = {"macs": 0, "acts": 0}

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, nn.Conv2d):
            per_output = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            totals["macs"] += out.numel() * per_output
        elif isinstance(mod, nn.Linear):
            totals["macs"] += out.numel() * mod.in_features
        totals["acts"] += out.numel()

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(shape, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return Cost(totals["macs"], totals["acts"])
