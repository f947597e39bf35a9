"""What a residual block is, found by what the code computes rather than what it is called.

A residual addition is an add (`+`, `+=`, `torch.add`) of two tensors that both come from
one earlier tensor s (the fork), where one side (the branch, F) applies more weight layers
to s than the other (the shortcut: s itself, or a function of it such as a 1x1 projection):
y = F(s) + shortcut(s) (He et al. 2015, Eq. 1 and 2). The residual block is the smallest
module whose `forward` performs that addition (and holds the fork).

They are read out of the data-flow graph of one traced forward pass (`resnet_edu.dataflow`:
every torch op and module call, seen through a `TorchFunctionMode` and forward hooks), so
this works the same on torchvision's blocks, on blocks whose attributes are named anything,
and on shortcuts computed in `forward` with functional ops. What it cannot see: code that
does not run torch ops from Python while traced (TorchScript modules) and data that leaves
torch on the way (`.numpy()`); `TracedPass.connected` is then False.

`residual_additions(model, x)` reads residual blocks out of code the package did not write:
`diagnostics.diagnose` (any model), `shape_trace.trace_shapes` and `stacks.is_identity_shortcut`
(a student's block). The package's own nets find their blocks by type (`ResidualBlock`, its
plain twins included), as torchvision would.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .dataflow import ACTIVATION, ACTIVATIONS, NORM, OTHER, WEIGHT, TracedPass, tracing

# ops that pass a branch's value on without being a layer of it (for "the branch's last layer")
PASS_THROUGH_OPS = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_dropout",
    "clone", "contiguous", "detach", "view", "reshape", "flatten", "to", "float", "type_as",
    "mul", "mul_", "__mul__", "__rmul__", "div", "div_", "__truediv__", "identity",
})


@dataclass(frozen=True)
class Step:
    """One op on a path: its function name, the innermost module running it, and its kind
    ("weight": applies a parameter of 2+ dims, a conv or linear layer; "norm";
    "activation"; "other"). `params`: it uses any parameter (a BatchNorm's scale counts)."""

    op: str
    module: str
    kind: str
    params: bool = False
    module_type: str = ""

    @property
    def label(self) -> str:
        """`ReLU` for an activation module, `relu()` for a functional call."""
        return self.module_type if self.module_type else f"{self.op}()"


@dataclass(frozen=True)
class ResidualAdd:
    """One residual addition y = branch + shortcut, as a traced forward pass saw it.

    `block` names the smallest module whose forward performs it ("" is the model itself);
    `branch` and `shortcut` are the ops from the fork to each operand (an empty shortcut is
    the identity). `failed`: the addition raised (the shapes could not be added).
    """

    block: str
    fork_shape: tuple[int, ...]
    branch_shape: tuple[int, ...]
    shortcut_shape: tuple[int, ...]
    branch: tuple[Step, ...]
    shortcut: tuple[Step, ...]
    fork_is_block_input: bool
    failed: bool = False
    shortcut_module: str | None = None  # the module holding every shortcut op, if any
    # the branch's last op that is a layer (dropout, reshapes and scalings skipped)
    branch_last_layer: Step | None = None
    # where it sits in the traced graph (for the tools that go on to use its tensors)
    call: int = field(default=-1, compare=False, repr=False)
    fork: int = field(default=-1, compare=False, repr=False)
    output: int | None = field(default=None, compare=False, repr=False)

    @property
    def identity(self) -> bool:
        """The block adds its own input unchanged (no op between them)."""
        return not self.shortcut and self.fork_is_block_input

    @property
    def shortcut_has_weights(self) -> bool:
        return any(s.kind == WEIGHT for s in self.shortcut)

    @property
    def shortcut_has_params(self) -> bool:
        return any(s.params for s in self.shortcut)

    @property
    def shortcut_normalized(self) -> bool:
        """A normalization op follows the shortcut's last weight layer."""
        return _normalized(self.shortcut)

    @property
    def branch_normalized(self) -> bool:
        """A normalization op follows the branch's last weight layer (post-activation
        blocks; a pre-activation branch ends in a conv)."""
        return _normalized(self.branch)

    @property
    def shortcut_activations(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.label for s in self.shortcut if s.kind == ACTIVATION))


def _normalized(steps: Sequence[Step]) -> bool:
    last_weight = max((i for i, s in enumerate(steps) if s.kind == WEIGHT), default=-1)
    return any(s.kind == NORM for s in steps[last_weight + 1:])


def residual_adds(traced: TracedPass) -> list[ResidualAdd]:
    """Every residual addition, in the order the forward pass made them."""
    found = [r for r in (_analyse(traced, *a) for a in traced.adds) if r is not None]
    counts: dict[str, int] = {}
    for r in found:
        counts[r.block] = counts.get(r.block, 0) + 1
    seen: dict[str, int] = {}
    named = []
    for r in found:  # one module adding twice (a whole net in one forward): number them
        if counts[r.block] > 1:
            seen[r.block] = seen.get(r.block, 0) + 1
            r = replace(r, block=f"{r.block or '(model)'} add {seen[r.block]}")
        named.append(r)
    return named


def _fork(traced: TracedPass, a: int, b: int) -> tuple[int, set[int], set[int]] | None:
    """The latest tensor both operands come from, and the nodes of each side's paths."""
    if a == b:
        return a, set(), set()
    marks = {a: 1, b: 2}
    heap = [-a, -b]
    heapq.heapify(heap)
    popped = []
    while heap:
        n = -heapq.heappop(heap)
        if marks[n] == 3:
            fork = n
            break
        popped.append(n)
        for i in traced.nodes[n].inputs:
            if i not in marks:
                marks[i] = 0
                heapq.heappush(heap, -i)
            marks[i] |= marks[n]
    else:
        return None
    below = {fork}  # keep only the nodes that come from the fork
    for n in sorted(popped):
        if any(i in below for i in traced.nodes[n].inputs):
            below.add(n)
    side_a = {n for n in popped if n in below and marks[n] == 1}
    side_b = {n for n in popped if n in below and marks[n] == 2}
    return fork, side_a, side_b


def _step(traced: TracedPass, n: int) -> Step:
    node = traced.nodes[n]
    module = traced.calls[node.call].module if node.call >= 0 else None
    act_module = type(module).__name__ if isinstance(module, ACTIVATIONS) else ""
    return Step(node.op, traced.calls[node.call].name if node.call >= 0 else "", node.kind,
                node.params, act_module if node.kind == ACTIVATION else "")


def _last_layer(traced: TracedPass, operand: int, fork: int) -> Step | None:
    """Walk back from the branch's output over ops that only pass it on (a dropout, a
    reshape, a scaling by a constant or a parameter: one input from the data)."""
    n = operand
    while n != fork:
        node = traced.nodes[n]
        if not (node.kind == OTHER and node.op in PASS_THROUGH_OPS
                and len(node.inputs) == 1):
            return _step(traced, n)
        n = node.inputs[0]
    return None


def _block_call(traced: TracedPass, call: int, fork: int, first_op: int) -> int:
    """The smallest module call, open at the addition, that made the fork or received it
    and ran the paths' ops (a helper module that only adds is not the block)."""
    while call >= 0:
        c = traced.calls[call]
        if fork >= c.first_node or (fork in c.inputs and first_op >= c.first_node):
            return call
        call = c.parent
    return -1


def _analyse(traced: TracedPass, call: int, a: int, b: int, failed: bool, out: int | None,
             ) -> ResidualAdd | None:
    sa, sb = traced.nodes[a].shape, traced.nodes[b].shape
    if not failed and sa != sb:
        return None  # a broadcast add (a bias, a global context term): not a shortcut
    found = _fork(traced, a, b)
    if found is None:
        return None
    fork, side_a, side_b = found
    wa = sum(traced.nodes[n].kind == WEIGHT for n in side_a)
    wb = sum(traced.nodes[n].kind == WEIGHT for n in side_b)
    if wa == wb:
        return None  # x + x, or two parallel branches of equal weight: not a shortcut
    (branch, bshape, top), (short, sshape, _) = sorted(
        [(side_a, sa, a), (side_b, sb, b)], key=lambda s: -sum(
            traced.nodes[n].kind == WEIGHT for n in s[0]))
    call = _block_call(traced, call, fork, min(side_a | side_b))
    block = traced.calls[call].name if call >= 0 else ""
    shortcut = tuple(_step(traced, n) for n in sorted(short))
    inside = [s.module for s in shortcut]
    holder = _common_module(inside) if inside else None
    if holder is not None and (holder == block or not holder.startswith(
            block + "." if block else "")):
        holder = None
    return ResidualAdd(
        block, traced.nodes[fork].shape, bshape, sshape,
        tuple(_step(traced, n) for n in sorted(branch)), shortcut,
        fork_is_block_input=call >= 0 and fork in traced.calls[call].inputs,
        failed=failed, shortcut_module=holder,
        branch_last_layer=_last_layer(traced, top, fork), call=call, fork=fork, output=out)


def _common_module(names: Sequence[str]) -> str:
    parts = [n.split(".") if n else [] for n in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


def residual_additions(model: nn.Module, x: torch.Tensor) -> list[ResidualAdd]:
    """The residual additions of `model(x)`, found by tracing one forward pass.

    Runs in eval mode without gradients and puts the mode back, so nothing in the model
    changes (BatchNorm statistics included).
    """
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad(), tracing(model, x) as traced:
            model(x)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return residual_adds(traced)


def residual_block_names(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the modules that perform a residual addition, each once, in order."""
    return list(dict.fromkeys(r.block for r in residual_additions(model, x)))
