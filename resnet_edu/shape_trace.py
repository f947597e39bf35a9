"""Shapes through a real model: a shape tracer and the cost of one pass.

- `trace_shapes(model, input_shape)`: run a model once and record, per module in execution
  order, its input and output shapes, and for each residual block its main-path shape,
  shortcut shape and shortcut kind (He et al. 2015, Sec. 3.3). Blocks are found by what they
  compute (an addition of a branch and its input, traced by `resnet_edu.residual_trace`), so any
  ResNet code works.
- `cost(model, input_shape)`: multiply-adds and activation values of one image's pass.

The rules these shapes follow (the conv output-size formula, a block's two paths) are in
`resnet_edu.shapes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .dataflow import tracing
from .modes import mode
from .residual_trace import ResidualAdd, residual_adds
from .shapes import Shape
from .shortcuts import ZeroPadShortcut

# ---------------------------------------------------------------------------------------
# the shape tracer


def shortcut_kind(downsample: nn.Module | None) -> str:
    """Name the shortcut a block uses, from its `downsample` module (He et al. 2015, 3.3)."""
    if downsample is None:
        return "identity"
    if isinstance(downsample, ZeroPadShortcut):
        return f"A: subsample /{downsample.stride} + zero-pad"
    mods = list(downsample.modules())
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    pools = [m for m in mods if isinstance(m, nn.AvgPool2d)]
    bn = " + BN" if any(isinstance(m, nn.BatchNorm2d) for m in mods) else ""
    if pools and convs:
        return f"D: avg-pool /{pools[0].stride} + 1x1 conv{bn}"
    if len(convs) == 1 and convs[0].kernel_size == (1, 1):
        return f"1x1 conv /{convs[0].stride[0]}{bn}"
    return type(downsample).__name__


@dataclass(frozen=True)
class TraceRow:
    """One module call: where it sits, what went in and what came out.

    For a residual block, `main_shape` is F(x)'s shape, `shortcut_shape` the shortcut's,
    `shortcut` names it ("identity", "1x1 conv /2 + BN", ...) and `projection` says
    whether it has weights (W_s in Eq. 2).
    """

    index: int
    name: str
    kind: str
    input_shape: Shape | None
    output_shape: Shape | None
    main_shape: Shape | None = None
    shortcut_shape: Shape | None = None
    shortcut: str | None = None
    projection: bool | None = None

    @property
    def depth(self) -> int:
        return 0 if not self.name else self.name.count(".") + 1

    @property
    def is_block(self) -> bool:
        return self.shortcut is not None

    @property
    def downsamples(self) -> bool:
        """True when this call shrinks the spatial size (H of (B, C, H, W))."""
        i, o = self.input_shape, self.output_shape
        return i is not None and o is not None and len(i) == len(o) == 4 and o[2] < i[2]


def format_shape(shape: Shape | None) -> str:
    """(B, C, H, W) -> 'CxHxW' (the batch dropped); (B, N) -> 'N'."""
    if shape is None:
        return "-"
    return "x".join(str(s) for s in shape[1:]) or "scalar"


@dataclass(frozen=True)
class ShapeTrace:
    """The rows of a traced forward pass, in execution order."""

    input_shape: Shape
    rows: tuple[TraceRow, ...] = field(default_factory=tuple)

    def blocks(self) -> list[TraceRow]:
        return [r for r in self.rows if r.is_block]

    def __getitem__(self, name: str) -> TraceRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no module called {name!r} ran; names look like 'layer2.0.conv1'")

    def table(self, collapse_blocks: bool = True, max_depth: int | None = None) -> str:
        """The trace as a text table. Rows that shrink H and W are marked '<- /2'.

        `collapse_blocks` hides the modules inside residual blocks (their row already
        shows both paths); `max_depth` hides deeper modules (1: only top-level children).
        """
        blocks = [r.name + "." for r in self.rows if r.is_block]
        rows = [
            r for r in self.rows
            if r.name  # the model itself
            and not (collapse_blocks and any(r.name.startswith(b) for b in blocks))
            and (max_depth is None or r.depth <= max_depth)
        ]
        leaves = [r for r in rows if r.is_block or not any(
            s.name.startswith(r.name + ".") for s in rows)]
        header = ("module", "type", "input", "output", "main path F(x)", "shortcut", "")
        body = []
        for r in leaves:
            note = ""
            if r.downsamples:
                note = f"<- /{round(r.input_shape[2] / r.output_shape[2])}"  # type: ignore[index]
            shortcut = "" if not r.is_block else f"{format_shape(r.shortcut_shape)} {r.shortcut}"
            body.append((r.name, r.kind, format_shape(r.input_shape),
                         format_shape(r.output_shape),
                         format_shape(r.main_shape) if r.is_block else "", shortcut, note))
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*header).rstrip(), "  ".join("-" * w for w in widths[:-1])]
        lines += [fmt.format(*line).rstrip() for line in body]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _shortcut_name(add: ResidualAdd, modules: dict[str, nn.Module]) -> str:
    if add.identity:
        return "identity"
    if add.shortcut_module is not None:
        return shortcut_kind(modules[add.shortcut_module])
    ops = [s.op for s in add.shortcut]
    return "in forward: " + ", ".join(ops) if ops else "identity"


def trace_shapes(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)
                 ) -> ShapeTrace:
    """Run `model` once on zeros of `input_shape` (B, C, H, W) and record every module call.

    Runs in eval mode without gradients (BN statistics untouched) and restores the mode.
    A residual block is a module whose forward adds a branch and its input (or a function
    of it), found by tracing (`resnet_edu.residual_trace`): its row's main-path shape is the
    branch's output, its shortcut shape the other operand's.
    """
    shape = tuple(input_shape)
    if len(shape) != 4 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                              for s in shape):
        raise ValueError(f"input_shape must be 4 positive ints (B, C, H, W), got {input_shape!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(shape, device=device)
    with mode(model, train=False), torch.no_grad(), tracing(model, x) as traced:
        model(x)
    modules = dict(model.named_modules())
    adds: dict[int, ResidualAdd] = {}
    for add in residual_adds(traced):
        adds.setdefault(add.call, add)  # a module that adds twice: its first addition
    rows = []
    for i, call in enumerate(traced.calls):
        extra: dict = {}
        add = adds.get(i)
        if add is not None:
            extra = {"main_shape": add.branch_shape, "shortcut_shape": add.shortcut_shape,
                     "shortcut": _shortcut_name(add, modules),
                     "projection": add.shortcut_has_params}
        out = call.output
        rows.append(TraceRow(i, call.name, type(call.module).__name__, call.input_shape,
                             None if out is None else tuple(out.shape), **extra))
    return ShapeTrace(shape, tuple(rows))


# ---------------------------------------------------------------------------------------
# what a pass costs


def check_input_shape(input_shape: object) -> tuple[int, ...]:
    """(C, H, W) or (B, C, H, W) of positive ints; (C, H, W) gets a batch of 2."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list, torch.Size)) else None
    if (shape is None or len(shape) not in (3, 4)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        raise ValueError(
            f"input_shape must be (C, H, W) or (B, C, H, W) of positive ints, "
            f"got {input_shape!r}")
    return shape if len(shape) == 4 else (2, *shape)


@dataclass(frozen=True)
class Cost:
    """Per image: multiply-adds of conv/linear layers, and activation values they produce."""

    macs: int
    activations: int


def cost(model: nn.Module, input_shape: Sequence[int]) -> Cost:
    """Multiply-adds and activation count of one image's forward pass (conv and linear)."""
    shape = check_input_shape(input_shape)
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
    try:
        params = list(model.parameters())
        device = params[0].device if params else torch.device("cpu")
        with mode(model, train=False), torch.no_grad():
            model(torch.zeros(shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return Cost(totals["macs"], totals["acts"])
