"""A forward pass as a data-flow graph: every torch op it runs, linked to the ops its inputs
came from, and every module call around them.

`tracing(model, x)` is a context manager: `model(x)` inside it is recorded into a
`TracedPass`. A `TorchFunctionMode` (`AdditionTracer`) sees every torch function, tensor
method and operator the Python code calls (`F.relu`, `x.relu()`, `out += x`, a module's own
`F.conv2d`), and forward hooks on every module say which module is running. Only tensors
that come from the input get nodes: parameters, buffers and constants are not part of the
data flow. `resnet_edu.residual_trace` reads the residual additions out of the graph.

What it cannot see: code that does not run torch ops from Python while traced (TorchScript
modules) and data that leaves torch on the way (`.numpy()`, `.tolist()`); then the output is
not connected to the input (`TracedPass.connected`).
"""

from __future__ import annotations

from collections.abc import Iterator
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
# ops whose output carries none of their input's values (only its shape or device)
DATA_FREE_OPS = frozenset({
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
})
# ops whose second tensor gives only a shape or dtype: the data comes from the first
SHAPE_FROM_OTHER_OPS = frozenset({"expand_as", "view_as", "reshape_as", "type_as"})
WEIGHT, NORM, ACTIVATION, OTHER = "weight", "norm", "activation", "other"


@dataclass
class Call:
    name: str
    module: nn.Module
    parent: int
    first_node: int  # the id the next node got when the call started
    inputs: tuple[int, ...]
    input_shape: tuple[int, ...] | None
    output: torch.Tensor | None = None
    input: torch.Tensor | None = None


@dataclass
class Node:
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

    nodes: list[Node] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
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

    def tensor(self, node: int) -> torch.Tensor:
        return self.keep[node]


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
        t.nodes.append(Node(op, t.stack[-1] if t.stack else -1, inputs, tuple(out.shape), **kw))
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
        traced.calls.append(Call(names[module], module, traced.stack[-1] if traced.stack
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
