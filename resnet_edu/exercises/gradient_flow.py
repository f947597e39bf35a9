"""Checks for notebook 02 (gradient flow in plain and residual nets).

    check_smallest_gradient(smallest_layer, side)   # which layer of plain-56 gets the least
    check_shortcut_forward(forward_with_shortcut)   # put the shortcut back in the right place
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..data import load_sample, normalize
from ..gradients import WEIGHT, GradientNorms, drift_decades, gradient_norms
from ..models import cifar_resnet
from . import NotYet, exercise

SIDES = ("input", "output")


def _probe_batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n training images of the shipped sample: the same batch every time."""
    train = load_sample().train
    return normalize(train.images[:n]), train.labels[:n]


def _plain56_table() -> GradientNorms:
    torch.manual_seed(0)
    return gradient_norms(cifar_resnet(56, residual=False), *_probe_batch())


@exercise
def check_smallest_gradient(smallest_layer: Callable[[GradientNorms], str], side: str) -> str:
    """`smallest_layer(table)` names the conv/fc layer with the smallest weight-gradient
    norm; `side` says where it sits in plain-56 with BatchNorm ('input' or 'output')."""
    table = _plain56_table()
    rows = table.of_kind(WEIGHT)
    answer = smallest_layer(table)
    if answer is None or answer is Ellipsis or side is Ellipsis:  # still `...`
        raise NotImplementedError
    if side not in SIDES:
        raise NotYet(f"side should be 'input' or 'output', got {side!r}")
    best = min(rows, key=lambda r: r.norm)
    if answer != best.layer:
        names = [r.layer for r in rows]
        if answer not in names:
            raise NotYet(f"{answer!r} is not a layer of the table; names look like "
                         f"{names[1]!r} (use row.layer of the row with the smallest row.norm)")
        row = rows[names.index(answer)]
        raise NotYet(f"{answer!r} has norm {row.norm:.2e}, but another layer has a "
                     "smaller one: compare every weight row's norm")
    truth = "output" if best.depth > len(rows) / 2 else "input"
    if side != truth:
        raise NotYet(f"right layer ({best.layer}, depth {best.depth} of {len(rows)}), but it "
                     f"sits on the {truth} side: with BatchNorm the plain net's gradient "
                     "grows on its way back to the input")
    return (f"{best.layer} (depth {best.depth} of {len(rows)}): with BatchNorm the plain net's "
            "gradient grows layer by layer on the way back, so the smallest is near the "
            "output and the input layers get the largest.")


class _Patched(nn.Module):
    """A block whose forward is the student's function of (block, x)."""

    def __init__(self, block: nn.Module, forward: Callable[[nn.Module, torch.Tensor],
                                                            torch.Tensor]) -> None:
        super().__init__()
        self.block, self.fn = block, forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fn(self.block, x)
        if out is None or out is Ellipsis:  # the body is still `...`
            raise NotImplementedError
        return out


def _patch(model: nn.Module, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
           ) -> nn.Module:
    for stage in (model.layer1, model.layer2, model.layer3):
        for i, block in enumerate(stage):
            stage[i] = _Patched(block, forward)
    return model


@exercise
def check_shortcut_forward(forward_with_shortcut: Callable[[nn.Module, torch.Tensor],
                                                           torch.Tensor]) -> str:
    """`forward_with_shortcut(block, x)` turns a plain block into a residual one.

    Checked on plain-56 with BatchNorm: with the student's forward in every block the net
    must compute what ResNet-56 (option A) with the same weights computes, and the gradient
    must reach the first block at about the scale it has at the last one.
    """
    x, y = _probe_batch(8)
    torch.manual_seed(0)
    plain = cifar_resnet(56, residual=False)
    reference = cifar_resnet(56, residual=True)
    # option A adds no parameters, so the plain net's weights load into the residual net
    reference.load_state_dict(plain.state_dict())
    patched = _patch(plain, forward_with_shortcut).train()
    reference.train()
    with torch.no_grad():
        out = patched(x)
        expected = reference(x)
    if out.shape != expected.shape:
        raise NotYet(f"the net's output has shape {tuple(out.shape)}, expected "
                     f"{tuple(expected.shape)}: does your forward return a tensor shaped like "
                     "the block's F(x)?")
    if not torch.allclose(out, expected, rtol=1e-4, atol=1e-5):
        raise NotYet("the net runs but does not compute ResNet-56: add the shortcut to F(x) "
                     "BEFORE the final ReLU, y = ReLU(F(x) + x) (He et al. 2015, Eq. 1 and "
                     "Fig. 2), and zero-pad x where the block changes shape (option A)")
    drift = drift_decades(gradient_norms(patched, x, y, activations=True,
                                         is_block=lambda m: isinstance(m, _Patched)))
    torch.manual_seed(0)
    plain_drift = drift_decades(gradient_norms(cifar_resnet(56, residual=False), x, y,
                                               activations=True))
    if not abs(drift) < 2:
        raise NotYet(f"the outputs match but the gradient still drifts by {drift:+.1f} "
                     "decades from the last block to the first")
    return (f"every block now adds its input back: the block-output gradient drifts by "
            f"{drift:+.1f} decades from the last block to the first, against "
            f"{plain_drift:+.1f} without the shortcut.")
