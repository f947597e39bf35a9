"""The loss landscape around trained weights: Li, Xu, Taylor, Studer and Goldstein,
*Visualizing the Loss Landscape of Neural Nets* (NeurIPS 2018).

    d1, d2 = (filter_normalized_direction(model, seed=s) for s in (1, 2))
    surface = grid(model, d1, d2, torch.linspace(-1, 1, 21), torch.linspace(-1, 1, 21), images)
    lam_max, lam_min = hessian_extremes(model, images)      # |lam_min / lam_max|: Li et al. Fig. 7

A random direction in weight space means little by itself: a net with BatchNorm computes the
same function when a filter is scaled, so a step of a given length is huge for a small filter
and nothing for a large one. Li et al. (Sec. 4) therefore scale each filter of a Gaussian
direction to the norm of the same filter in the trained weights ("filter normalization") and
set the direction of BatchNorm parameters and biases to zero. Every point is evaluated with
BatchNorm in eval mode (its running statistics fixed), on a fixed set of images.

The curvature comes from Hessian-vector products (Pearlmutter 1994: the gradient of
g(theta) . v, with autograd), so the Hessian itself is never formed: a few dozen Lanczos
steps approach both ends of its spectrum from inside (an isolated lam_max fast; lam_min, next
to the bulk, slowly, so its estimate is a bound on |lam_min| from below). Li et al. report
|lam_min / lam_max|: near 0 where the landscape is nearly convex, large where it has strong
negative curvature (their Fig. 7).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .data import ImageSet, normalize
from .evaluation import evaluate
from .modes import mode

Direction = list[torch.Tensor]  # one tensor per parameter of the model, in `parameters()` order


def filter_normalize(direction: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]
                     ) -> Direction:
    """`direction` with each filter scaled to the norm of the same filter of `weights` (a filter:
    one output channel of a conv, one row of a linear layer), and 1-D tensors (BatchNorm's
    gamma and beta, biases) set to zero, as Li et al. (Sec. 4) do."""
    if len(direction) != len(weights):
        raise ValueError(f"direction has {len(direction)} tensors, the weights {len(weights)}")
    out = []
    for d, w in zip(direction, weights, strict=True):
        if d.shape != w.shape:
            raise ValueError(f"a direction tensor of shape {tuple(d.shape)} for a weight of "
                             f"shape {tuple(w.shape)}")
        if w.ndim <= 1:
            out.append(torch.zeros_like(w))
            continue
        d_norm = d.flatten(1).norm(dim=1).view(-1, *([1] * (w.ndim - 1)))  # (filters, 1, ...)
        w_norm = w.flatten(1).norm(dim=1).view_as(d_norm)
        out.append(d * w_norm / (d_norm + 1e-10))
    return out


def filter_normalized_direction(model: nn.Module, seed: int) -> Direction:
    """A Gaussian direction for `model`'s parameters (seeded), filter-normalized."""
    generator = torch.Generator().manual_seed(seed)
    weights = [p.detach().cpu() for p in model.parameters()]
    gaussian = [torch.randn(w.shape, generator=generator) for w in weights]
    device = next(model.parameters()).device
    return [d.to(device) for d in filter_normalize(gaussian, weights)]


def difference(end: nn.Module, start: nn.Module) -> Direction:
    """end - start, parameter by parameter: the direction of Goodfellow et al.'s (2015) line
    from the initial weights (`start`) to the trained ones (`end`)."""
    return [a.detach() - b.detach() for a, b in zip(end.parameters(), start.parameters(),
                                                     strict=True)]


@contextmanager
def moved(model: nn.Module, steps: Sequence[tuple[float, Direction]]) -> Iterator[nn.Module]:
    """`model` with its parameters at theta + sum(alpha * d) for (alpha, d) in `steps`, put
    back exactly as they were on leaving (even after an error)."""
    saved = [p.detach().clone() for p in model.parameters()]
    try:
        with torch.no_grad():
            for p, *ds in zip(model.parameters(), *(d for _, d in steps), strict=True):
                for (alpha, _), d in zip(steps, ds, strict=True):
                    p.add_(d, alpha=float(alpha))
        yield model
    finally:
        with torch.no_grad():
            for p, s in zip(model.parameters(), saved, strict=True):
                p.copy_(s)


def line(model: nn.Module, direction: Direction, alphas: Sequence[float] | torch.Tensor,
         images: ImageSet, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """Loss and accuracy on `images` at theta + alpha * direction for each alpha (1-D)."""
    losses, accs = [], []
    for alpha in alphas:
        with moved(model, [(float(alpha), direction)]):
            result = evaluate(model, images, batch_size=batch_size)
        losses.append(result["loss"])
        accs.append(result["acc"])
    return {"alpha": torch.as_tensor(alphas, dtype=torch.float32),
            "loss": torch.tensor(losses), "acc": torch.tensor(accs)}


def grid(model: nn.Module, d1: Direction, d2: Direction,
         alphas: Sequence[float] | torch.Tensor, betas: Sequence[float] | torch.Tensor,
         images: ImageSet, batch_size: int = 1000,
         progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Loss and accuracy at theta + alpha * d1 + beta * d2 over the grid: (len(alphas),
    len(betas)) tensors. `progress(done, total)` is called after each point."""
    shape = (len(alphas), len(betas))
    loss, acc = torch.empty(shape), torch.empty(shape)
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            with moved(model, [(float(a), d1), (float(b), d2)]):
                result = evaluate(model, images, batch_size=batch_size)
            loss[i, j], acc[i, j] = result["loss"], result["acc"]
            if progress is not None:
                progress(i * shape[1] + j + 1, shape[0] * shape[1])
    return {"alpha": torch.as_tensor(alphas, dtype=torch.float32),
            "beta": torch.as_tensor(betas, dtype=torch.float32), "loss": loss, "acc": acc}


# --- curvature -----------------------------------------------------------------------------

def hessian_vector_product(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                           v: Sequence[torch.Tensor]) -> Direction:
    """H v for the Hessian H of `loss_fn()` with respect to `params`, without forming H: the
    gradient of (grad . v) (Pearlmutter 1994)."""
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    dot = sum((g * x).sum() for g, x in zip(grads, v, strict=True))
    return [h.detach() for h in torch.autograd.grad(dot, params)]


def lanczos(hvp: Callable[[Direction], Direction], like: Sequence[torch.Tensor], steps: int,
            seed: int = 0) -> torch.Tensor:
    """The Ritz values (ascending) of `steps` Lanczos iterations on the symmetric operator
    `hvp`: the eigenvalues of the tridiagonal matrix that H becomes in the Krylov space of a
    random start. Its two ends converge to H's extreme eigenvalues far sooner than power
    iteration's (Golub & Van Loan, Sec. 10.1). Full reorthogonalization keeps the basis
    orthogonal in floating point; the iteration stops early once the space is exhausted."""
    generator = torch.Generator().manual_seed(seed)

    def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum((x * y).sum() for x, y in zip(a, b, strict=True))

    steps = min(steps, sum(p.numel() for p in like))  # no more directions than dimensions
    tiny = 1e3 * torch.finfo(like[0].dtype).eps  # a residual this small (relative) is rounding
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in like]
    norm = torch.sqrt(dot(v, v))
    basis = [[x / norm for x in v]]
    alphas, betas = [], []
    for _ in range(steps):
        w = hvp(basis[-1])
        size = torch.sqrt(dot(w, w))
        alphas.append(dot(w, basis[-1]))
        # Gram-Schmidt against every earlier vector, in two full passes: in floating point
        # one pass leaves w slightly tilted toward the basis, and Kahan's "twice is enough"
        for _ in range(2):
            for q in basis:
                c = dot(w, q)
                w = [x - c * y for x, y in zip(w, q, strict=True)]
        beta = torch.sqrt(dot(w, w))
        if beta <= tiny * size:
            break  # the Krylov space is invariant: the Ritz values are exact eigenvalues
        betas.append(beta)
        basis.append([x / beta for x in w])
    k = len(alphas)
    t = torch.diag(torch.stack(alphas).double())
    if k > 1:
        off = torch.stack(betas[:k - 1]).double()
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(t)


def extreme_eigenvalues(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                        iters: int = 30, seed: int = 0) -> tuple[float, float]:
    """(lam_max, lam_min) of the Hessian of `loss_fn()` at `params`, from `iters` Lanczos
    steps (one Hessian-vector product each)."""
    ritz = lanczos(lambda v: hessian_vector_product(loss_fn, params, v), params, iters, seed)
    return float(ritz[-1]), float(ritz[0])


def hessian_extremes(model: nn.Module, images: ImageSet, iters: int = 30, seed: int = 0,
                     batch_size: int = 250) -> tuple[float, float]:
    """(lam_max, lam_min) of the Hessian of the mean cross-entropy on `images` (BatchNorm in
    eval mode) with respect to the model's parameters. The product H v is summed over batches
    of `batch_size` images, each weighted by its share, so memory does not grow with the
    number of images."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    batches = [(normalize(images.images[i:i + batch_size].to(device)),
                images.labels[i:i + batch_size].to(device))
               for i in range(0, len(images), batch_size)]

    def hvp(v: Direction) -> Direction:
        total = [torch.zeros_like(p) for p in params]
        for x, y in batches:  # x: (B, 3, 32, 32), y: (B,)
            part = hessian_vector_product(
                lambda x=x, y=y: nn.functional.cross_entropy(model(x), y), params, v)
            for t, h in zip(total, part, strict=True):
                t.add_(h, alpha=len(y) / len(images))
        return total

    with mode(model, train=False):
        ritz = lanczos(hvp, params, iters, seed)
    return float(ritz[-1]), float(ritz[0])


def local_minima(loss: Sequence[Sequence[float]] | torch.Tensor) -> int:
    """How many points of a 2-D loss grid lie strictly below all their neighbours (up to 8;
    points on the edge compare with those they have): 1 for a bowl, many for a rough surface.
    A count on a grid, so it sees only bumps wider than the grid's spacing."""
    z = torch.as_tensor(loss, dtype=torch.float64)
    if z.ndim != 2:
        raise ValueError(f"expected a 2-D grid of losses, got shape {tuple(z.shape)}")
    padded = nn.functional.pad(z[None, None], (1, 1, 1, 1), value=float("inf"))[0, 0]
    rows, cols = z.shape
    lowest = torch.full_like(z, float("inf"))
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                lowest = torch.minimum(lowest, padded[1 + di:1 + di + rows, 1 + dj:1 + dj + cols])
    return int((z < lowest).sum())
