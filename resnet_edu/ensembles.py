"""Residual nets as ensembles of paths (Veit, Wilber, Belongie 2016, "Residual Networks Behave
Like Ensembles of Relatively Shallow Networks", NeurIPS 2016, arXiv:1605.06431).

Unrolling n blocks y_i = y_{i-1} + f_i(y_{i-1}) writes the net as 2^n paths: each path
enters a subset of the blocks' branches and skips the rest (Sec. 3, Eq. 3-4). C(n, k) paths
go through k branches, so path lengths follow a binomial distribution (Sec. 5).

    path_length_distribution(9)                  # C(9, k) / 2^9, k = 0..9
    gradient_per_path_length(model, x, y)        # Sec. 5: gradient carried by length-k paths
    predicted_gradient_share(54, r=0.3)          # where one attenuation per block puts it
    lesion_each_block(model, data)               # Sec. 4.1: delete one block at a time
    lesion_random_blocks(model, data, trials=5)  # Sec. 4.3: delete k random blocks
    lesion_each_block(model, data, recalibrate=train_images)  # BatchNorm re-estimated first

Gradient per path length, the paper's method (Sec. 5): one forward pass; in the backward
pass, for k randomly chosen blocks the gradient goes through the residual branch only, for
the other n - k through the skip connection only; the norm of the gradient at the first
block's input is the gradient carried by paths of length k (averaged over random choices).
Here a block gets its restricted gradient by detaching one term of its sum:

    y = F(x) + s(x).detach()     # "branch only": same value, gradient only through F
    y = F(x).detach() + s(x)     # "skip only":   same value, gradient only through s

Deleting a block (Sec. 4) keeps its shortcut: y = s(x), the identity, or option A's strided
zero-padding where a block changes shape. For a post-activation block y = ReLU(F(x) + s(x))
the ReLU is dropped too: its input s(x) is already non-negative, the output of a ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from .augment import DeviceLoader
from .blocks import ResidualBlock
from .checks import check_float, check_int
from .data import ImageSet
from .evaluation import evaluate
from .modes import mode

ROUTES = ("both", "branch", "skip", "deleted")


def residual_blocks(model: nn.Module) -> list[ResidualBlock]:
    """The blocks of a net, input to output (plain blocks too: `residual=False`)."""
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no ResidualBlock (BasicBlock, "
                         "Bottleneck, PreActBlock) to unroll or delete")
    return blocks


def path_counts(n: int) -> list[int]:
    """How many of the 2^n paths through n blocks have length k = 0..n: C(n, k)."""
    check_int("n", n, low=0)
    return [math.comb(n, k) for k in range(n + 1)]


def path_length_distribution(n: int) -> list[float]:
    """The fraction of paths of each length: C(n, k) / 2^n, a Binomial(n, 1/2)."""
    return [c / 2**n for c in path_counts(n)]


def shortcut_of(block: ResidualBlock, x: torch.Tensor) -> torch.Tensor:
    """What a deleted block leaves: its shortcut s(x). A plain block has none; it gets the
    shortcut a residual block of its shape would have (identity, or option A padding)."""
    if block.residual:
        return block.shortcut(x)
    if block.inplanes == block.out_channels and block.stride == 1:
        return x
    from .shortcuts import ZeroPadShortcut

    return ZeroPadShortcut(block.inplanes, block.out_channels, block.stride)(x)


def routed_forward(block: ResidualBlock, x: torch.Tensor, route: str) -> torch.Tensor:
    """The block's output (same values for "both", "branch", "skip"), with the gradient let
    through both terms, the residual branch only, the skip only; or the block deleted."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "deleted":
        return shortcut_of(block, x)
    if not block.residual:
        raise ValueError("a plain block has no skip to route the gradient through")
    f, s = block.residual_branch(x), block.shortcut(x)  # F(x), s(x): (B, C_out, H/s, W/s)
    if route == "branch":
        s = s.detach()
    elif route == "skip":
        f = f.detach()
    return block.after_addition(f + s)  # the block's own rule: ReLU after it, or nothing


@contextmanager
def routes(model: nn.Module, route_of: Sequence[str]) -> Iterator[nn.Module]:
    """Within the `with`, block i of `model` runs `routed_forward(..., route_of[i])`."""
    blocks = residual_blocks(model)
    if len(route_of) != len(blocks):
        raise ValueError(f"route_of needs one route per block ({len(blocks)}), "
                         f"got {len(route_of)}")
    try:
        for block, route in zip(blocks, route_of, strict=True):
            if route != "both":
                block.forward = (  # an instance attribute shadows the class's forward
                    lambda x, block=block, route=route: routed_forward(block, x, route))
        yield model
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)


# --- gradient per path length (Veit et al. Sec. 5, Fig. 6) -----------------------------------

def _input_gradient_norm(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """|dL/d(input of the first block)| for the mean cross-entropy over the batch."""
    first = residual_blocks(model)[0]
    seen: list[torch.Tensor] = []
    handle = first.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        loss = nn.functional.cross_entropy(model(x), y)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(loss, seen[0])
    return float(grad.norm())


def gradient_per_path_length(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             samples: int = 10, seed: int = 0) -> list[float]:
    """Mean |gradient at the first block's input| carried by paths of length k = 0..n.

    For each k, `samples` random sets of k blocks route the gradient through their branch,
    the other blocks through their skip. BN uses its running statistics (eval mode), so all
    passes compute the same forward values.
    """
    check_int("samples", samples, low=1)
    n = len(residual_blocks(model))
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().requires_grad_(False)
    means = []
    with mode(model, train=False):
        for k in range(n + 1):
            total = 0.0
            for _ in range(samples):
                chosen = set(torch.randperm(n, generator=gen)[:k].tolist())
                with routes(model, ["branch" if i in chosen else "skip" for i in range(n)]):
                    total += _input_gradient_norm(model, x, y)
            means.append(total / samples)
    return means


def total_gradient_per_path_length(per_path: Sequence[float]) -> list[float]:
    """Gradient per length times the number of paths of that length (Veit et al. Fig. 6b)."""
    return [g * c for g, c in zip(per_path, path_counts(len(per_path) - 1), strict=True)]


# --- what one attenuation per block predicts --------------------------------------------------
# If each extra branch on a path scales its gradient by r, paths of length k carry C(n, k) r^k
# of it in total: a Binomial(n, r / (1 + r)), whose mean n r / (1 + r) sits at the same
# fraction of n for every depth. Veit et al.'s shift to short paths (most of ResNet-110's
# gradient on paths of 5 to 17 of its 54 blocks) needs r well below 1; depth only narrows it.

def attenuation_per_block(per_path: Sequence[float]) -> float:
    """r, the factor per extra block on a path: exp of the least-squares slope of
    log(gradient per path) against the path length k = 0..n."""
    if len(per_path) < 2 or any(not g > 0 for g in per_path):
        raise ValueError("per_path: expected two or more positive gradient norms (k = 0..n), "
                         f"got {list(per_path)!r}")
    logs = [math.log(g) for g in per_path]
    ks = range(len(logs))
    k_mean, log_mean = sum(ks) / len(logs), sum(logs) / len(logs)
    slope = (sum((k - k_mean) * (v - log_mean) for k, v in zip(ks, logs, strict=True))
             / sum((k - k_mean) ** 2 for k in ks))
    return math.exp(slope)


def predicted_gradient_share(n: int, r: float) -> list[float]:
    """The share of the total gradient on paths of length k = 0..n when every branch scales
    the gradient by `r`: C(n, k) r^k / (1 + r)^n (r = 1: the path-length distribution)."""
    check_int("n", n, low=0)
    r = check_float("r", r, low=0, low_open=True)  # an attenuation per block
    p = r / (1 + r)  # the share of a Binomial(n, p), computed without (1 + r)^n overflowing
    return [c * p**k * (1 - p) ** (n - k) for k, c in enumerate(path_counts(n))]


def mean_path_length(share: Sequence[float]) -> float:
    """The mean length k of a distribution over k = 0..n (it need not sum to 1)."""
    return sum(k * s for k, s in enumerate(share)) / sum(share)


def share_between(share: Sequence[float], low: int, high: int) -> float:
    """The fraction of `share` on lengths low..high (both included)."""
    return sum(share[low:high + 1]) / sum(share)


# --- lesions (Veit et al. Sec. 4, Fig. 3 and 5) ---------------------------------------------

@contextmanager
def recalibrated_norms(model: nn.Module, images: ImageSet, batch_size: int = 500
                       ) -> Iterator[nn.Module]:
    """Within the `with`, every BatchNorm's running statistics are re-estimated on `images`
    (forward passes in train mode, without gradients, the plain average over the batches) for
    the net as it computes now, e.g. with blocks deleted; on leaving, the trained statistics
    are put back. A control for lesions: after a deletion the following blocks receive inputs
    whose statistics no longer match the ones their BatchNorms stored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError(f"{type(model).__name__} has no BatchNorm to recalibrate")
    saved = [(m, m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in norms]
    device = next(model.parameters()).device
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over every batch below
        with torch.no_grad(), mode(model, train=True):
            for x, _ in DeviceLoader(images, batch_size, train=False, device=device):
                model(x)  # x: (B, 3, 32, 32); only the BatchNorms' statistics change
        yield model
    finally:
        for m, momentum, buffers in saved:
            m.momentum = momentum
            for name, value in buffers.items():
                getattr(m, name).copy_(value)


def accuracy_without(model: nn.Module, data: ImageSet, deleted: Sequence[int],
                     device: torch.device | None = None,
                     recalibrate: ImageSet | None = None) -> float:
    """Test accuracy of `model` with the blocks at the indices `deleted` removed; with
    `recalibrate`, BatchNorm's statistics re-estimated on those images first."""
    n = len(residual_blocks(model))
    for i in deleted:
        check_int("deleted block index", i, low=0, high=n - 1)
    norms = nullcontext() if recalibrate is None else recalibrated_norms(model, recalibrate)
    with routes(model, ["deleted" if i in set(deleted) else "both" for i in range(n)]), norms:
        return evaluate(model, data, device=device)["acc"]


def lesion_each_block(model: nn.Module, data: ImageSet, device: torch.device | None = None,
                      recalibrate: ImageSet | None = None) -> list[float]:
    """Accuracy after deleting block i alone, for every i (Veit et al. Fig. 3)."""
    return [accuracy_without(model, data, [i], device, recalibrate)
            for i in range(len(residual_blocks(model)))]


def lesion_random_blocks(model: nn.Module, data: ImageSet, trials: int = 5, seed: int = 0,
                         ks: Sequence[int] | None = None, device: torch.device | None = None,
                         ) -> dict[int, list[float]]:
    """Accuracy after deleting k random blocks, `trials` random choices per k (Fig. 5a)."""
    check_int("trials", trials, low=1)
    n = len(residual_blocks(model))
    ks = range(n + 1) if ks is None else ks
    gen = torch.Generator().manual_seed(seed)
    out: dict[int, list[float]] = {}
    for k in ks:
        check_int("k", k, low=0, high=n)
        out[k] = [accuracy_without(model, data, torch.randperm(n, generator=gen)[:k].tolist(),
                                   device) for _ in range(1 if k in (0, n) else trials)]
    return out


def downsampling_blocks(model: nn.Module) -> list[int]:
    """Indices of the blocks that change shape (stride 2 or more channels)."""
    return [i for i, b in enumerate(residual_blocks(model))
            if b.stride != 1 or b.inplanes != b.out_channels]


def block_input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                          route: str = "both") -> list[float]:
    """|dL/dx_l| at the input of every block l and at the last block's output (n + 1
    numbers, input to output), every block routing its gradient by `route`."""
    blocks = residual_blocks(model)
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
             for b in blocks]
    hooks.append(blocks[-1].register_forward_hook(lambda _m, _a, out: seen.append(out)))
    try:
        with mode(model, train=False), routes(model, [route] * len(blocks)):
            loss = nn.functional.cross_entropy(model(x), y)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(loss, seen)
    return [float(g.norm()) for g in grads]

