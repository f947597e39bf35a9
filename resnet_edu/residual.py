"""What a residual block is, found by what the code computes rather than what it is called.

A residual addition is an add (`+`, `+=`, `torch.add`) of two tensors that both come from
one earlier tensor s (the fork), where one side (the branch, F) applies more weight layers
to s than the other (the shortcut: s itself, or a function of it such as a 1x1 projection):
y = F(s) + shortcut(s) (He et al. 2015, Eq. 1 and 2). The residual block is the smallest
module whose `forward` performs that addition (and holds the fork).

`AdditionTracer` finds them while a forward pass runs: a `TorchFunctionMode` sees every torch
function, tensor method and operator the Python code calls (`F.relu`, `x.relu()`,
`out += x`, a module's own `F.conv2d`), and forward hooks on every module say which module
is running. Each op becomes a node of a data-flow graph linked to the ops its tensors came
from, so it works the same on torchvision's blocks, on blocks whose attributes are named
anything, and on shortcuts computed in `forward`. What it cannot see: code that does not run
torch ops from Python while traced (TorchScript modules) and data that leaves torch on the
way (`.numpy()`, `.tolist()`); `TracedPass.connected` says so.

`find_residual_blocks(model, x)` is the one definition of "residual block" the package uses
(`shapes.trace_shapes`, `gradients.gradient_norms`, `stacks.is_identity_shortcut` and
`diagnostics.diagnose`).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.overrides import TorchFunctionMode

ADD_OPS = frozenset({"add", "add_", "__add__", "__iadd__", "__radd__"})
NORM_OPS = frozenset({"batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
                      "local_response_norm"})
NORM_MODULES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                nn.RMSNorm)
ACTIVATION_OPS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "prelu", "rrelu", "elu", "elu_",
    "selu", "celu", "gelu", "silu", "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "softplus",
    "hardswish", "hardsigmoid", "hardtanh", "hardtanh_", "softmax", "threshold", "clamp_min",
})
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
               nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Hardswish,
               nn.Hardsigmoid, nn.Hardtanh, nn.Softmax)
# ops that pass a branch's value on without being a layer of it (for "the branch's last layer")
PASS_THROUGH_OPS = frozenset({
    "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_dropout",
    "clone", "contiguous", "detach", "view", "reshape", "flatten", "to", "float", "type_as",
    "mul", "mul_", "__mul__", "__rmul__", "div", "div_", "__truediv__", "identity",
})
# ops whose output carries none of their input's values (only its shape or device)
DATA_FREE_OPS = frozenset({
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
})
# ops whose second tensor gives only a shape or dtype: the data comes from the first
SHAPE_FROM_OTHER_OPS = frozenset({"expand_as", "view_as", "reshape_as", "type_as"})
WEIGHT, NORM, ACTIVATION, OTHER = "weight", "norm", "activation", "other"


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


@dataclass
class _Call:
    name: str
    module: nn.Module
    parent: int
    first_node: int  # the id the next node got when the call started
    inputs: tuple[int, ...]
    input_shape: tuple[int, ...] | None
    output: torch.Tensor | None = None
    input: torch.Tensor | None = None


@dataclass
class _Node:
    op: str
    call: int  # the innermost module call running the op (-1: none)
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    kind: str = OTHER
    params: bool = False
    bias: bool = False  # a weight op with a bias parameter (a conv/linear bias)


def _tensors(value: object) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                yield v


def _first_tensor(value: object) -> torch.Tensor | None:
    return next(_tensors(value), None)


@dataclass
class TracedPass:
    """The data-flow graph of one forward pass, and the residual additions found in it."""

    nodes: list[_Node] = field(default_factory=list)
    calls: list[_Call] = field(default_factory=list)
    stack: list[int] = field(default_factory=list)  # open calls; after a crash, where it was
    # (module call, operand node, operand node, failed, sum node)
    adds: list[tuple[int, int, int, bool, int | None]] = field(default_factory=list)
    tensor_node: dict[int, int] = field(default_factory=dict)
    keep: list[torch.Tensor] = field(default_factory=list)  # keeps every id() valid
    param_derived: dict[int, torch.Tensor] = field(default_factory=dict)  # weight.T, ...
    output_node: int | None = None

    def node_of(self, t: torch.Tensor) -> int | None:
        return self.tensor_node.get(id(t))

    @property
    def connected(self) -> bool:
        """The output was reached from the input through ops the tracer saw."""
        return self.output_node is not None

    def names(self) -> dict[int, str]:
        return {i: c.name for i, c in enumerate(self.calls)}

    def residual_adds(self) -> list[ResidualAdd]:
        """Every residual addition, in the order the forward pass made them."""
        found = [r for r in (self._analyse(*a) for a in self.adds) if r is not None]
        counts: dict[str, int] = {}
        for r in found:
            counts[r.block] = counts.get(r.block, 0) + 1
        seen: dict[str, int] = {}
        named = []
        for r in found:  # one module adding twice (a whole net in one forward): number them
            if counts[r.block] > 1:
                seen[r.block] = seen.get(r.block, 0) + 1
                r = _replace_block(r, f"{r.block or '(model)'} add {seen[r.block]}")
            named.append(r)
        return named

    # -- the analysis of one addition

    def _fork(self, a: int, b: int) -> tuple[int, set[int], set[int]] | None:
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
            for i in self.nodes[n].inputs:
                if i not in marks:
                    marks[i] = 0
                    heapq.heappush(heap, -i)
                marks[i] |= marks[n]
        else:
            return None
        below = {fork}  # keep only the nodes that come from the fork
        for n in sorted(popped):
            if any(i in below for i in self.nodes[n].inputs):
                below.add(n)
        side_a = {n for n in popped if n in below and marks[n] == 1}
        side_b = {n for n in popped if n in below and marks[n] == 2}
        return fork, side_a, side_b

    def _step(self, n: int) -> Step:
        node = self.nodes[n]
        module = self.calls[node.call].module if node.call >= 0 else None
        act_module = type(module).__name__ if isinstance(module, ACTIVATIONS) else ""
        return Step(node.op, self.calls[node.call].name if node.call >= 0 else "", node.kind,
                    node.params, act_module if node.kind == ACTIVATION else "")

    def _last_layer(self, operand: int, fork: int) -> Step | None:
        """Walk back from the branch's output over ops that only pass it on (a dropout, a
        reshape, a scaling by a constant or a parameter: one input from the data)."""
        n = operand
        while n != fork:
            node = self.nodes[n]
            if not (node.kind == OTHER and node.op in PASS_THROUGH_OPS
                    and len(node.inputs) == 1):
                return self._step(n)
            n = node.inputs[0]
        return None

    def _block_call(self, call: int, fork: int, first_op: int) -> int:
        """The smallest module call, open at the addition, that made the fork or received it
        and ran the paths' ops (a helper module that only adds is not the block)."""
        while call >= 0:
            c = self.calls[call]
            if fork >= c.first_node or (fork in c.inputs and first_op >= c.first_node):
                return call
            call = c.parent
        return -1

    def tensor(self, node: int) -> torch.Tensor:
        return self.keep[node]

    def _analyse(self, call: int, a: int, b: int, failed: bool, out: int | None,
                 ) -> ResidualAdd | None:
        sa, sb = self.nodes[a].shape, self.nodes[b].shape
        if not failed and sa != sb:
            return None  # a broadcast add (a bias, a global context term): not a shortcut
        found = self._fork(a, b)
        if found is None:
            return None
        fork, side_a, side_b = found
        wa = sum(self.nodes[n].kind == WEIGHT for n in side_a)
        wb = sum(self.nodes[n].kind == WEIGHT for n in side_b)
        if wa == wb:
            return None  # x + x, or two parallel branches of equal weight: not a shortcut
        (branch, bshape, top), (short, sshape, _) = sorted(
            [(side_a, sa, a), (side_b, sb, b)], key=lambda s: -sum(
                self.nodes[n].kind == WEIGHT for n in s[0]))
        call = self._block_call(call, fork, min(side_a | side_b))
        block = self.calls[call].name if call >= 0 else ""
        shortcut = tuple(self._step(n) for n in sorted(short))
        inside = [s.module for s in shortcut]
        holder = _common_module(inside) if inside else None
        if holder is not None and (holder == block or not holder.startswith(
                block + "." if block else "")):
            holder = None
        return ResidualAdd(
            block, self.nodes[fork].shape, bshape, sshape,
            tuple(self._step(n) for n in sorted(branch)), shortcut,
            fork_is_block_input=call >= 0 and fork in self.calls[call].inputs,
            failed=failed, shortcut_module=holder,
            branch_last_layer=self._last_layer(top, fork), call=call, fork=fork, output=out)


def _replace_block(r: ResidualAdd, block: str) -> ResidualAdd:
    from dataclasses import replace

    return replace(r, block=block)


def _common_module(names: Sequence[str]) -> str:
    parts = [n.split(".") if n else [] for n in names]
    common = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)


class AdditionTracer(TorchFunctionMode):
    """Records every torch op of a forward pass as a node linked to its inputs' nodes.

    Only tensors that come from the registered input(s) get nodes: parameters, buffers and
    constants are not part of the data flow (two blocks sharing a buffer are not linked).
    """

    def __init__(self, traced: TracedPass) -> None:
        super().__init__()
        self.t = traced

    def _new_node(self, op: str, inputs: tuple[int, ...], out: torch.Tensor, **kw) -> int:
        t = self.t
        t.nodes.append(_Node(op, t.stack[-1] if t.stack else -1, inputs, tuple(out.shape), **kw))
        t.tensor_node[id(out)] = len(t.nodes) - 1
        t.keep.append(out)
        return len(t.nodes) - 1

    def source(self, x: torch.Tensor) -> int:
        return self._new_node("input", (), x)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        flat = [*args, *kwargs.values()]
        tensors = [t for v in flat for t in _tensors(v)]
        carriers = tensors[:1] if name in SHAPE_FROM_OTHER_OPS else tensors
        linked = tuple(dict.fromkeys(n for t in carriers if (n := self.t.node_of(t)) is not None))
        try:
            out = func(*args, **kwargs)
        except Exception:
            if name in ADD_OPS and len(linked) == 2:
                self.t.adds.append((self.t.stack[-1] if self.t.stack else -1, *linked, True,
                                    None))
            raise
        params = [t for t in tensors
                  if isinstance(t, nn.Parameter) or id(t) in self.t.param_derived]
        if not linked or name in DATA_FREE_OPS:
            for o in _tensors(out) if params else ():  # e.g. `self.weight.T`: still a weight
                self.t.param_derived[id(o)] = o
            return out
        call = self.t.stack[-1] if self.t.stack else -1
        module = self.t.calls[call].module if call >= 0 else None
        if any(p.dim() >= 2 for p in params):
            kind = WEIGHT
        elif name in NORM_OPS or isinstance(module, NORM_MODULES):
            kind = NORM
        elif name in ACTIVATION_OPS or isinstance(module, ACTIVATIONS):
            kind = ACTIVATION
        else:
            kind = OTHER
        bias = kind == WEIGHT and any(p.dim() == 1 for p in params)
        node = None
        for o in _tensors(out):
            node = self._new_node(name, linked, o, kind=kind, params=bool(params), bias=bias)
        if name in ADD_OPS and len(linked) == 2:
            self.t.adds.append((call, *linked, False, node))
        return out


@contextmanager
def tracing(model: nn.Module, *inputs: torch.Tensor) -> Iterator[TracedPass]:
    """Trace what runs inside the `with` block: `model(*inputs)` there is recorded."""
    traced = TracedPass()
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def pre(module: nn.Module, args: tuple) -> None:
        x = _first_tensor(args)
        ins = tuple(n for t in _tensors(args) if (n := traced.node_of(t)) is not None)
        traced.calls.append(_Call(names[module], module, traced.stack[-1] if traced.stack
                                  else -1, len(traced.nodes), ins,
                                  None if x is None else tuple(x.shape), input=x))
        traced.stack.append(len(traced.calls) - 1)

    def post(module: nn.Module, args: tuple, out: object) -> None:
        call = traced.stack.pop()
        traced.calls[call].output = _first_tensor(out)

    for m in names:
        if isinstance(m, torch.jit.ScriptModule):
            continue  # compiled code takes no Python hooks; `connected` will say it is unseen
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    mode = AdditionTracer(traced)
    try:
        with mode:
            for x in inputs:
                mode.source(x)
            yield traced
    finally:
        for h in handles:
            h.remove()
    root = next((c for c in traced.calls if c.module is model), None)
    if root is not None and root.output is not None:
        traced.output_node = traced.node_of(root.output)


def find_residual_blocks(model: nn.Module, x: torch.Tensor) -> list[ResidualAdd]:
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
    return traced.residual_adds()


def residual_block_names(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The names of the modules that perform a residual addition, each once, in order."""
    return list(dict.fromkeys(r.block for r in find_residual_blocks(model, x)))
