"""Per-layer gradient norms: how the gradient's scale changes from the output to the input.

He et al. 2015 ("Deep Residual Learning", Sec. 1 and 4.1) observe that deeper plain nets
train worse even with BatchNorm, and that residual nets do not. A first look at why is the
size of the gradient each layer receives. `gradient_norms(model, images, labels)` does one
forward and backward pass and returns, for every conv/linear weight in the order the forward
pass uses them (depth order), the L2 norm of dLoss/dW; optionally also the norm of dLoss/dy
at each block output y, caught with forward hooks. The model is left exactly as it was: no
`.grad` is written, BatchNorm running statistics are restored, the hooks are removed and the
train/eval mode is put back. `resnet_edu.plots.plot_norms_vs_depth` draws several nets' norms
on one log axis (a gradient's scale varies over orders of magnitude, so only a log axis shows
it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import ResidualBlock
from .modes import mode
from .runtime import supports_float64

WEIGHT, ACTIVATION = "weight", "activation"
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NormRow:
    """One row of the table: which layer, its depth index (1 = nearest the input), the norm."""

    layer: str  # module name, as in model.named_modules(), e.g. "layer2.0.conv1"
    depth: int  # 1-based position in forward order among rows of the same kind
    kind: str  # "weight" (||dL/dW||) or "activation" (||dL/dy|| at a block output)
    norm: float


@dataclass(frozen=True)
class GradientNorms:
    """A tidy table of gradient norms (one row per layer and kind), in depth order."""

    rows: tuple[NormRow, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[NormRow]:
        return iter(self.rows)

    def of_kind(self, kind: str = WEIGHT) -> tuple[NormRow, ...]:
        """The rows of one kind, in depth order."""
        if kind not in (WEIGHT, ACTIVATION):
            raise ValueError(f"kind must be {WEIGHT!r} or {ACTIVATION!r}, got {kind!r}")
        return tuple(r for r in self.rows if r.kind == kind)

    def norms(self, kind: str = WEIGHT) -> list[float]:
        """The norms of one kind, first layer first."""
        return [r.norm for r in self.of_kind(kind)]

    def layers(self, kind: str = WEIGHT) -> list[str]:
        return [r.layer for r in self.of_kind(kind)]

    def ratio(self, kind: str = WEIGHT) -> float:
        """First-layer norm / last-layer norm: 1 means the scale survives the trip back."""
        norms = self.norms(kind)
        if not norms:
            raise ValueError(f"no {kind} rows to take a ratio of")
        if norms[-1] == 0.0:
            return float("nan") if norms[0] == 0.0 else float("inf")
        return norms[0] / norms[-1]

    def records(self) -> list[dict[str, object]]:
        """The rows as dicts (e.g. for `pandas.DataFrame(table.records())` or JSON)."""
        return [{"layer": r.layer, "depth": r.depth, "kind": r.kind, "norm": r.norm}
                for r in self.rows]

    @classmethod
    def from_records(cls, records: list[dict[str, object]]) -> GradientNorms:
        """The inverse of `records()`, e.g. for a table stored in a JSON results file."""
        try:
            rows = tuple(NormRow(str(r["layer"]), int(r["depth"]), str(r["kind"]),
                                 float(r["norm"])) for r in records)
        except (KeyError, TypeError) as e:
            raise ValueError("expected records with keys layer, depth, kind, norm "
                             f"(as written by GradientNorms.records()), got {e!r}") from e
        return cls(rows)

    def __str__(self) -> str:
        lines = [f"{'layer':<22} {'depth':>5} {'kind':<10} {'norm':>10}"]
        lines += [f"{r.layer:<22} {r.depth:>5} {r.kind:<10} {r.norm:>10.3e}" for r in self.rows]
        return "\n".join(lines)


def is_weight_layer(module: nn.Module) -> bool:
    """Conv and linear layers: the ones whose weight gradients we follow."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def is_residual_block(module: nn.Module) -> bool:
    """The modules whose outputs `gradient_norms` follows by default: the package's own blocks
    (`resnet_edu.blocks.ResidualBlock`, their plain twins included), so a plain net is measured
    at the same places as its residual twin. For blocks written elsewhere pass `is_block=`."""
    return isinstance(module, ResidualBlock)


def _check_inputs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(
            "images and labels must be torch.Tensors, got "
            f"{type(images).__name__} and {type(labels).__name__}"
        )
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"expected a non-empty batch with one label per image, got {len(images)} images "
            f"and {len(labels)} labels"
        )


def gradient_norms(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    activations: bool = False,
    loss_fn: LossFn = nn.functional.cross_entropy,
    train_mode: bool = True,
    is_block: Callable[[nn.Module], bool] | None = None,
) -> GradientNorms:
    """Per-layer gradient L2 norms of `loss_fn(model(images), labels)` on one batch.

    Weight rows: ||dL/dW|| for every conv/linear layer the forward pass calls, in call order
    (depth 1 = the stem conv, the last row = the classifier). With `activations=True` also
    ||dL/dy|| at every block output y (`is_block` picks the blocks; by default the package's
    `ResidualBlock`s). `train_mode=True` runs
    BatchNorm on batch statistics, as during training. Norms are accumulated in float64, so
    tiny gradients are not lost to float32 underflow in the sum of squares.
    """
    _check_inputs(model, images, labels)
    is_block = is_block or is_residual_block
    # BN running stats are updated by a train-mode forward: keep copies to put back
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    called: list[tuple[str, nn.Module]] = []
    outputs: list[tuple[str, torch.Tensor]] = []
    handles = []
    names = {m: n for n, m in model.named_modules()}

    def on_weight_layer(module: nn.Module, args: object, out: torch.Tensor) -> None:
        if all(m is not module for _, m in called):  # first call fixes its depth
            called.append((names[module], module))

    def on_block(module: nn.Module, args: object, out: torch.Tensor) -> None:
        outputs.append((names[module], out))

    try:
        for module in model.modules():
            if is_weight_layer(module) and module.weight.requires_grad:
                handles.append(module.register_forward_hook(on_weight_layer))
            if activations and is_block(module):
                handles.append(module.register_forward_hook(on_block))
        with mode(model, train=train_mode), torch.enable_grad():
            loss = loss_fn(model(images), labels)
            weights = [m.weight for _, m in called]
            acts = [out for _, out in outputs]
            # autograd.grad, not .backward(): returns the gradients without touching .grad
            grads = torch.autograd.grad(loss, weights + acts, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)

    rows = [NormRow(name, i + 1, WEIGHT, _norm64(g))
            for i, ((name, _), g) in enumerate(zip(called, grads[: len(weights)], strict=True))]
    rows += [NormRow(name, i + 1, ACTIVATION, _norm64(g))
             for i, ((name, _), g) in enumerate(zip(outputs, grads[len(weights):], strict=True))]
    return GradientNorms(tuple(rows))


def _norm64(g: torch.Tensor | None) -> float:
    """||g|| summed in float64 (0 for an unused weight); on devices without float64 (MPS)
    the gradient is copied to the CPU first."""
    if g is None:
        return 0.0
    if not supports_float64(g.device):
        g = g.cpu()
    return float(torch.linalg.vector_norm(g.double()))


def drift_decades(table: GradientNorms, kind: str = ACTIVATION) -> float:
    """log10(first / last) of the norms of one kind: how many orders of magnitude the
    gradient's scale changes on its way from the output back to the input.

    0 means level; +3 means 1000x larger at the input (exploding); -3 means 1000x smaller
    (vanishing); -inf means the input side underflowed to exactly 0 in float32.
    """
    r = table.ratio(kind)
    if math.isnan(r):
        raise ValueError(f"every {kind} norm is 0: the drift is undefined")
    return -math.inf if r == 0 else math.inf if math.isinf(r) else math.log10(r)


# float32's smallest normal number, about 1.2e-38. A norm below it has lost its value to
# underflow, and how much of it survives as a subnormal number depends on the CPU.
FLOAT32_TINY = torch.finfo(torch.float32).tiny


def underflowed(norm: float) -> bool:
    """True for a norm below float32's smallest normal number (`FLOAT32_TINY`)."""
    return norm < FLOAT32_TINY


def drift_or_underflow(table: GradientNorms, kind: str = ACTIVATION) -> float:
    """`drift_decades`, or -inf when the first block's norm has underflowed in float32."""
    norms = table.norms(kind)
    if norms and underflowed(norms[0]) and not underflowed(norms[-1]):
        return -math.inf
    return drift_decades(table, kind)


def decades(value: float) -> str:
    """A number of decades to one decimal ('+3.4'), or 'underflow' for -inf."""
    return "underflow" if value == -math.inf else f"{value:+.1f}"


def summary_line(name: str, table: GradientNorms) -> str:
    """One net in one line: log10 of the first/last weight-gradient ratio, the median weight
    gradient's order of magnitude, and the drift, in decades.

    Few digits on purpose: float32 rounding differs between CPUs (their kernels sum in
    different orders), and at initialization a deep net can amplify it into the second
    digit; norms below float32's smallest normal number read 'underflow'.
    """
    w = table.norms(WEIGHT)
    ratio = ("underflow" if underflowed(w[0]) or underflowed(w[-1])
             else decades(math.log10(w[0] / w[-1])))
    median = statistics.median(w)
    scale = "underflow" if underflowed(median) else f"1e{round(math.log10(median)):+03d}"
    return f"{name:<11} {ratio:>15} {scale:>15} {decades(drift_or_underflow(table)):>10}"


SUMMARY_HEADER = (f"{'net':<11} {'first/last dW':>15} {'median |dE/dW|':>15} {'drift':>10}\n"
                  f"{'':<11} {'(decades)':>15} {'(order)':>15} {'(decades)':>10}")


def compare_nets(builders: Mapping[str, Callable[[], nn.Module]], images: torch.Tensor,
                 labels: torch.Tensor, *, seed: int = 0, activations: bool = True,
                 ) -> dict[str, GradientNorms]:
    """`gradient_norms` of several freshly built nets on the same batch.

    The seed is reset before each build, so every net starts from the same random state and
    a net's numbers do not depend on which nets were built before it.
    """
    out = {}
    for name, build in builders.items():
        torch.manual_seed(seed)
        out[name] = gradient_norms(build(), images, labels, activations=activations)
    return out
