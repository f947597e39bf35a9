"""Shattered gradients (Balduzzi et al. 2017, "The Shattered Gradients Problem: If resnets are
the answer, then what is the question?", ICML 2017, arXiv:1702.08591).

Feed a 1-D input sweep (256 points in [-2, 2], as in the paper's Fig. 1) through a deep
fully-connected ReLU net of width 200 at initialization and take the derivative dy/dx of the
scalar output at every point. In a shallow net dy/dx changes slowly along the sweep (like
Brownian noise); in a deep plain net it jumps from point to point (like white noise). The
paper's abstract: the correlation between gradients "decays exponentially with depth" in
feedforward nets and "sublinearly" with skip-connections.

    net = fc_net(depth=24, kind="plain")          # 1 -> 200 -> ... -> 200 -> 1
    x, g = input_gradients(net)                   # (256,), (256,): the sweep and dy/dx there
    autocorrelation(g)[1]                         # lag-1 correlation: ~1 smooth, ~0 white noise
    sweep_depths((2, 8, 24, 50), seeds=4)         # lag-1 correlation per kind and depth

Four kinds of net, one w x w layer per depth step: "plain" (x_{l+1} = ReLU(W x_l)),
"plain-bn" (x_{l+1} = ReLU(BN(W x_l))), "residual" (x_{l+1} = x_l + W ReLU(x_l)) and
"residual-bn" (x_{l+1} = x_l + W ReLU(BN(x_l)), pre-activation order). Weights use He init
(variance 2 / fan-in), biases PyTorch's default.

BatchNorm and per-point gradients: in training mode BN mixes the points of a batch, so the
output at one x would depend on every other x. Here BN normalizes with the sweep's mean and
variance *treated as constants* (detached), the way a BN net computes one input's output at
test time; dy_i/dx_i then is the gradient at point i alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .checks import check_int

KINDS = ("plain", "plain-bn", "residual", "residual-bn")
WIDTH = 200  # hidden units per layer (Balduzzi et al. 2017, Fig. 1)
POINTS = 256  # input points of the sweep in [-2, 2] (Fig. 1)


class FrozenBatchNorm(nn.Module):
    """BN over the batch with its statistics detached: y = (x - mean) / std, per feature.

    The sweep's statistics normalize it (as BN in training mode would), but no gradient
    flows through them, so dy_i/dx_i is a per-point derivative (see the module docstring).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, width)
        mean = x.mean(0, keepdim=True).detach()
        var = x.var(0, unbiased=False, keepdim=True).detach()
        return (x - mean) / torch.sqrt(var + self.eps)


class FCBlock(nn.Module):
    """One layer: plain x_{l+1} = ReLU(BN(W x_l)), or residual x_{l+1} = x_l + W ReLU(BN(x_l))
    (pre-activation order, He et al. 2016); without "-bn" in `kind` the BN is left out."""

    def __init__(self, width: int, kind: str) -> None:
        super().__init__()
        self.residual = kind.startswith("residual")
        self.fc = nn.Linear(width, width)
        self.bn = FrozenBatchNorm() if kind.endswith("-bn") else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, width)
        if self.residual:
            return x + self.fc(torch.relu(self.bn(x)))  # x_{l+1} = x_l + F(x_l)
        return torch.relu(self.bn(self.fc(x)))  # x_{l+1} = ReLU(BN(W x_l))


def _he_init(module: nn.Module, zero_bias: bool) -> None:
    """He-normal weights (variance 2 / fan-in, He et al. 2015b); biases as PyTorch draws them
    (uniform in +-1/sqrt(fan-in)), or zero."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / m.in_features))
            if zero_bias:
                nn.init.zeros_(m.bias)


def fc_net(depth: int, kind: str = "plain", width: int = WIDTH, zero_bias: bool = False
           ) -> nn.Sequential:
    """A 1-in, 1-out fully-connected ReLU net: Linear(1, w), `depth` layers `FCBlock`, then
    Linear(w, 1). Every layer has one w x w weight matrix, plain or residual alike.

    `zero_bias=True` sets every bias to 0. Without BN the net is then positively homogeneous,
    f(a x) = a f(x) for a > 0: dy/dx takes one value for x < 0 and one for x > 0 at any depth,
    so nothing can shatter. Biases (or BN's centring) put the ReLUs' kinks inside the sweep.
    """
    check_int("depth", depth, low=1)
    check_int("width", width, low=1)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    layers = [nn.Linear(1, width), *(FCBlock(width, kind) for _ in range(depth)),
              nn.Linear(width, 1)]
    net = nn.Sequential(*layers)
    _he_init(net, zero_bias)
    return net


def input_sweep(points: int = POINTS, low: float = -2.0, high: float = 2.0) -> torch.Tensor:
    """`points` evenly spaced inputs in [low, high], shape (points,)."""
    check_int("points", points, low=2)
    return torch.linspace(low, high, points)


def input_gradients(net: nn.Module, x: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The sweep x (N,) and the derivative dy/dx of the net's output at each point (N,).

    One forward and one backward pass: y has one output per point and each point's output
    depends on its own input only, so the gradient of sum(y) w.r.t. x is dy_i/dx_i.
    """
    x = input_sweep() if x is None else x
    xs = x.detach().clone().reshape(-1, 1).requires_grad_(True)  # (N, 1)
    y = net(xs)  # (N, 1)
    (grad,) = torch.autograd.grad(y.sum(), xs)
    return x.detach(), grad.reshape(-1).detach()


def autocorrelation(g: torch.Tensor, max_lag: int | None = None) -> torch.Tensor:
    """Normalized autocorrelation of a sequence, lags 0..max_lag: r[0] = 1.

    r[k] = sum_i (g_i - mean)(g_{i+k} - mean) / sum_i (g_i - mean)^2, the usual estimate.
    Smooth (Brownian) sequences have r[1] near 1; white noise has r[k] near 0 for k >= 1.
    """
    g = g.detach().double().reshape(-1)
    n = g.numel()
    max_lag = n - 1 if max_lag is None else check_int("max_lag", max_lag, low=0, high=n - 1)
    d = g - g.mean()
    denom = (d * d).sum()
    if denom == 0:
        raise ValueError("the sequence is constant: its autocorrelation is undefined")
    return torch.stack([(d[: n - k] * d[k:]).sum() / denom for k in range(max_lag + 1)])


def lag1_correlation(depth: int, kind: str, seed: int = 0, width: int = WIDTH,
                     zero_bias: bool = False) -> float:
    """r[1] of dy/dx along the sweep for one freshly initialized net."""
    torch.manual_seed(seed)
    _, g = input_gradients(fc_net(depth, kind, width, zero_bias))
    return float(autocorrelation(g, 1)[1])


def sweep_depths(depths: Sequence[int], kinds: Iterable[str] = KINDS, seeds: int = 3,
                 width: int = WIDTH) -> dict[str, list[float]]:
    """Mean lag-1 correlation over `seeds` initializations, per kind, at each depth."""
    check_int("seeds", seeds, low=1)
    return {kind: [sum(lag1_correlation(d, kind, s, width) for s in range(seeds)) / seeds
                   for d in depths] for kind in kinds}


def predicted_rates(depths: Sequence[int]) -> dict[str, list[float]]:
    """The decay rates the paper derives for the correlation between gradients, as functions
    of depth L: 2^-L for feedforward rectifier nets, 1/sqrt(L) for resnets.

    Its correlation is between the gradients at two inputs, not our lag-1 autocorrelation
    along the sweep, so compare shapes only (the notebook scales each to one measured point).
    """
    return {"plain-bn": [2.0 ** -d for d in depths],
            "residual-bn": [1 / math.sqrt(d) for d in depths]}
