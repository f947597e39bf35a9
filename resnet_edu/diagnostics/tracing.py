"""The recorded pass behind `diagnose`: one traced forward and one backward on random input.

`run_pass` traces the forward pass with `resnet_edu.dataflow.tracing` (every torch op and
module call, linked into a data-flow graph), turns each residual addition into a
`BlockRecord`, measures the gradient norm at each block's input and output, and collects
what the checks need (layers with a bias feeding BatchNorm, how many normalization and
weight layers ran). The model is left as it was: train/eval modes, BatchNorm statistics and
`.grad` are restored and the hooks are removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..dataflow import ACTIVATION, NORM, WEIGHT, TracedPass, tracing
from ..modes import mode
from ..residual_trace import ResidualAdd, Step, residual_adds
from .report import BlockRecord, GradientRatio

# a norm that subtracts a per-channel mean over the positions a conv bias is constant on
MEAN_REMOVING_NORM_OPS = ("batch_norm", "instance_norm")


@dataclass
class PassRecord:
    """What one diagnosed pass saw."""

    output: torch.Tensor | None = None
    error: BaseException | None = None
    error_stack: list[str] = field(default_factory=list)  # module names open at the error
    blocks: list[BlockRecord] = field(default_factory=list)
    gradients: list[GradientRatio] = field(default_factory=list)
    bias_before_norm: dict[str, tuple[str, int]] = field(default_factory=dict)
    norm_layers: int = 0  # normalization ops that ran (BatchNorm, GroupNorm, LayerNorm...)
    weight_layers: int = 0  # conv/linear ops that ran
    connected: bool = False  # the output was traced back to the input
    ops_seen: int = 0
    skipped: list[str] = field(default_factory=list)


def split_shortcut_activations(shortcut: Sequence[Step]) -> tuple[tuple[str, ...],
                                                                  tuple[str, ...]]:
    """(activations on the shortcut, pre-activations of its projection).

    An activation before the shortcut's first conv/linear layer pre-activates the
    projection's input, W_s relu(bn(x)): the pre-activation design, whose "projection
    shortcuts are also with pre-activation" (He et al. 2016, appendix), whether the BN-ReLU is
    the shortcut's own or shared with the branch (then it sits before the fork and is not on
    the shortcut at all). Anything after that layer, or on a shortcut without one, is on the
    shortcut's output.
    """
    first_weight = next((i for i, s in enumerate(shortcut) if s.kind == WEIGHT), None)
    on, pre = [], []
    for i, s in enumerate(shortcut):
        if s.kind == ACTIVATION:
            (pre if first_weight is not None and i < first_weight else on).append(s.label)
    return tuple(dict.fromkeys(on)), tuple(dict.fromkeys(pre))


def _block_records(traced: TracedPass, adds: Sequence[ResidualAdd]) -> list[BlockRecord]:
    per_call: dict[int, int] = {}
    for r in adds:
        per_call[r.call] = per_call.get(r.call, 0) + 1
    records = []
    for r in adds:
        call = traced.calls[r.call] if r.call >= 0 else None
        whole_module = call is not None and per_call[r.call] == 1
        out = call.output if whole_module else None
        last = r.branch_last_layer
        activations, preactivation = split_shortcut_activations(r.shortcut)
        records.append(BlockRecord(
            r.block, r.shortcut_module,
            input_shape=call.input_shape if whole_module else r.fork_shape,
            output_shape=(tuple(out.shape) if out is not None else
                          None if r.failed else r.branch_shape),
            main_shape=r.branch_shape, shortcut_shape=r.shortcut_shape,
            shortcut_has_weights=r.shortcut_has_weights,
            shortcut_activations=activations, shortcut_preactivation=preactivation,
            shortcut_normalized=r.shortcut_normalized, branch_normalized=r.branch_normalized,
            fork_shape=r.fork_shape,
            branch_last_layer=None if last is None else _layer_label(traced, last),
            branch_ends_in_activation=last is not None and last.kind == "activation",
            failed=r.failed, identity=r.identity,
        ))
    return records


def _layer_label(traced: TracedPass, step) -> str:
    if step.module_type:
        return step.module_type
    module = next((c.module for c in traced.calls if c.name == step.module), None)
    if module is not None and not module._modules and step.module:
        return type(module).__name__
    return step.label


def _boundary_tensors(traced: TracedPass, adds: Sequence[ResidualAdd],
                      ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(block, input, output) of the outermost blocks, for the gradient ratios."""
    per_call: dict[int, int] = {}
    for r in adds:
        per_call[r.call] = per_call.get(r.call, 0) + 1
    names = [r.block for r in adds if r.block]
    out = []
    for r in adds:
        if r.failed or any(r.block.startswith(n + ".") for n in names):
            continue  # a block inside a block is part of it
        call = traced.calls[r.call] if r.call >= 0 else None
        if call is not None and per_call[r.call] == 1 and call.output is not None:
            x_in, x_out = call.input, call.output
        else:
            x_in, x_out = traced.tensor(r.fork), traced.tensor(r.output)
        out.append((r.block, x_in, x_out))
    return out


def _bias_before_norm(traced: TracedPass) -> dict[str, tuple[str, int]]:
    """Conv/linear layers with a bias whose output goes straight into a mean-removing norm."""
    names = traced.names()
    found: dict[str, tuple[str, int]] = {}
    for node in traced.nodes:
        if node.op not in MEAN_REMOVING_NORM_OPS or not node.inputs:
            continue
        producer = traced.nodes[node.inputs[0]]
        if producer.kind == WEIGHT and producer.bias:
            found.setdefault(names.get(producer.call, producer.op),
                             (names.get(node.call, node.op), producer.shape[1]))
    return found


def run_pass(model: nn.Module, shape: tuple[int, ...], seed: int) -> PassRecord:
    """Trace `model` on random input of `shape`, then back-propagate a loss through it."""
    record = PassRecord()
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    saved_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_grads = [p.grad for p in params]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device)
    traced = TracedPass()
    try:
        # train mode: the mode the gradient check is about; BN uses batch statistics
        with mode(model, train=True), torch.enable_grad():
            try:
                with tracing(model, x) as traced:
                    out = model(x)
                record.output = next((t for t in ((out,) if isinstance(out, torch.Tensor)
                                                  else out if isinstance(out, (tuple, list))
                                                  else ()) if isinstance(t, torch.Tensor)),
                                     None)
            except Exception as e:  # the student's model failed: report it, don't raise
                record.error = e
                record.error_stack = [traced.calls[i].name for i in traced.stack]
            adds = residual_adds(traced)
            record.blocks = _block_records(traced, adds)
            if record.output is not None:
                record.gradients = _gradient_ratios(traced, adds, record, shape, gen, device)
    finally:
        model.load_state_dict(saved_state)
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
    record.connected = traced.connected
    record.ops_seen = len(traced.nodes)
    record.bias_before_norm = _bias_before_norm(traced)
    record.norm_layers = sum(n.kind == NORM for n in traced.nodes)
    record.weight_layers = sum(n.kind == WEIGHT for n in traced.nodes)
    return record


def _gradient_ratios(traced: TracedPass, adds: Sequence[ResidualAdd], record: PassRecord,
                     shape: tuple[int, ...], gen: torch.Generator, device: torch.device,
                     ) -> list[GradientRatio]:
    output = record.output
    if not output.requires_grad:
        record.skipped.append("gradient-flow: the output does not require grad")
        return []
    norms: dict[int, float] = {}
    boundaries = _boundary_tensors(traced, adds)

    def keep_norm(key: int):
        return lambda g: norms.__setitem__(key, float(g.detach().float().norm()))

    for key, t in {id(t): t for _, a, b in boundaries for t in (a, b)}.items():
        if t is not None and t.requires_grad:
            t.register_hook(keep_norm(key))
    if output.dim() == 2:
        labels = torch.randint(0, output.shape[1], (shape[0],), generator=gen).to(device)
        loss = nn.functional.cross_entropy(output, labels)
    else:
        loss = output.float().pow(2).mean()
    loss.backward()
    ratios = []
    for name, a, b in boundaries:
        g_in, g_out = norms.get(id(a)), norms.get(id(b))
        if g_in is not None and g_out is not None:
            ratios.append(GradientRatio(name, g_in, g_out))
    return ratios
