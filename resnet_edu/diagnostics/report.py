"""What `diagnose` returns: findings, the residual blocks it saw, gradient ratios, as text."""

from __future__ import annotations

import math
from dataclasses import dataclass


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
    """A residual block as one traced forward pass saw it.

    `name` is the smallest module whose forward performs the addition. `input_shape` and
    `output_shape` are that module's (or, where one module adds several times, the fork's
    and the sum's); `main_shape` is the branch F(x), `shortcut_shape` the shortcut's output.
    `shortcut` names the module holding the whole shortcut, if one does. `failed`: the
    addition raised, so `output_shape` is None.
    """

    name: str
    shortcut: str | None
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    main_shape: tuple[int, ...] | None = None
    shortcut_shape: tuple[int, ...] | None = None
    shortcut_has_weights: bool = False
    shortcut_activations: tuple[str, ...] = ()  # after the shortcut's first weight layer
    # before its first weight layer: a pre-activated projection, W_s relu(bn(x)) (He et al.
    # 2016, appendix), which is not a finding
    shortcut_preactivation: tuple[str, ...] = ()
    shortcut_normalized: bool = False  # a normalization layer after its last conv
    branch_normalized: bool = False
    fork_shape: tuple[int, ...] | None = None  # the tensor both paths start from
    branch_last_layer: str | None = None  # e.g. "BatchNorm2d", "ReLU", "relu()"
    branch_ends_in_activation: bool = False
    failed: bool = False
    identity: bool = False  # the block adds its own input, unchanged


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
    """What `diagnose` found; `str(report)` reads as plain words.

    `skipped` lists what could not be checked, and why (a forward pass that failed, a model
    the tracer cannot see into); it is printed with the findings.
    """

    model: str
    input_shape: tuple[int, ...]
    findings: tuple[Finding, ...]
    blocks: tuple[BlockRecord, ...] = ()
    gradients: tuple[GradientRatio, ...] = ()
    skipped: tuple[str, ...] = ()

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
        n_blocks = len(self.blocks)
        head = (f"diagnose({self.model}, input {self.input_shape}): "
                f"{n_blocks} residual block{'' if n_blocks == 1 else 's'}, ")
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
        """Each block's input, output, branch and shortcut shapes, one line per block."""
        width = max([14, *(len(b.name) + 1 for b in self.blocks)])
        rows = [f"{'block':<{width}} {'input':<18} {'output':<18} shortcut"]
        for b in self.blocks:
            short = "identity" if b.identity else (b.shortcut or "computed in forward")
            rows.append(f"{b.name:<{width}} {_fmt(b.input_shape):<18} "
                        f"{_fmt(b.output_shape):<18} {short}")
        return "\n".join(rows)

    def gradient_table(self) -> str:
        """Per-block gradient norm ratios, one line per block (from the output backwards)."""
        rows = [f"{'block':<14} {'|dL/dx_out|':>12} {'|dL/dx_in|':>12} {'ratio':>7}"]
        rows += [f"{g.block:<14} {g.grad_out:>12.3e} {g.grad_in:>12.3e} {g.ratio:>7.3f}"
                 for g in reversed(self.gradients)]
        return "\n".join(rows)


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else str(tuple(shape))
