"""Unrolling a stack of residual blocks: every x_i and F(x_i), the sum, and the gradient.

He et al. 2016 ("Identity Mappings in Deep Residual Networks", Sec. 2): when every block is
x_{i+1} = x_i + F(x_i) (an identity shortcut and nothing after the addition), then

    x_L = x_l + sum_{i=l}^{L-1} F(x_i)                                    (Eq. 4)
    dE/dx_l = dE/dx_L (1 + d/dx_l sum_{i=l}^{L-1} F(x_i))                 (Eq. 5)

`record_stack` runs a stack block by block and keeps every x_i and F(x_i), so Eq. 4 can be
checked term by term; `gradient_identity` computes both sides of Eq. 5 with autograd. The
post-activation `BasicBlock` (He et al. 2015) applies a ReLU after the addition, so for it
Eq. 4 holds only up to what that ReLU clips (`StackRecord.addition_gaps`).

For the depth story, `LinearStack` builds stacks of linear blocks, x -> W x (plain) or
x -> x + W x (residual), whose end-to-end Jacobian is the product of W_i or of (I + W_i);
`jacobian_gains` measures its norm after every block.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .checks import check_int
from .residual_trace import residual_additions

LossFn = Callable[[torch.Tensor], torch.Tensor]


def _check_block(block: object, index: int) -> None:
    for name in ("residual_branch", "shortcut"):
        if not callable(getattr(block, name, None)):
            raise ValueError(
                f"block {index} must have residual_branch(x) and shortcut(x) like the blocks in "
                f"resnet_edu.blocks, got a {type(block).__name__} without {name}()"
            )


def is_identity_shortcut(block: nn.Module, x: torch.Tensor) -> bool:
    """True when `block(x)` adds its input unchanged: it makes one residual addition, and
    its shortcut is x itself (no projection W_s, nothing applied to x on the way).

    Decided by tracing the block on x (`resnet_edu.residual_trace`), not by its attributes.
    """
    adds = residual_additions(block, x)
    return len(adds) == 1 and adds[0].identity


def run_stack(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """x_L: the input sent through every block in turn (each block's own forward)."""
    for block in blocks:
        x = block(x)
    return x


@dataclass(frozen=True)
class StackRecord:
    """Every block input x_0 .. x_L (x_L is the output) and every branch F(x_0) .. F(x_{L-1})."""

    xs: tuple[torch.Tensor, ...]
    fs: tuple[torch.Tensor, ...]
    identity: tuple[bool, ...]  # block i's shortcut is the identity (Eq. 4 needs all of them)

    @property
    def depth(self) -> int:
        return len(self.fs)

    def _span(self, start: int, end: int | None) -> tuple[int, int]:
        end = self.depth if end is None else end
        ints = isinstance(start, int) and isinstance(end, int)
        if not (ints and 0 <= start <= end <= self.depth):
            raise ValueError(
                f"need 0 <= l <= L <= {self.depth} (the number of blocks), got l={start!r}, "
                f"L={end!r}"
            )
        for i in range(start, end):
            if not self.identity[i]:
                raise ValueError(
                    f"block {i} has no identity shortcut (it is plain or projects, W_s x), so "
                    "x_L = x_l + sum F does not apply; He et al. 2016, Eq. 4 needs x + F(x)"
                )
        return start, end

    def unrolled(self, start: int = 0, end: int | None = None) -> torch.Tensor:
        """The right side of Eq. 4: x_l + sum_{i=l}^{L-1} F(x_i)."""
        start, end = self._span(start, end)
        out = self.xs[start]
        for f in self.fs[start:end]:
            out = out + f  # (B, C, H, W): the shortcut adds x, so shapes never change
        return out

    def unrolled_error(self, start: int = 0, end: int | None = None) -> float:
        """max |x_L - (x_l + sum F)|: zero up to rounding for pre-activation stacks."""
        end = self.depth if end is None else end
        return (self.xs[end] - self.unrolled(start, end)).abs().max().item()

    def addition_gaps(self) -> tuple[torch.Tensor, ...]:
        """x_{i+1} - (x_i + F(x_i)) per block: what the block does after the addition.

        Zero for `PreActBlock`; for the post-activation `BasicBlock` it is
        ReLU(z) - z = ReLU(-z) with z = x_i + F(x_i): the negative part the final ReLU clips.
        """
        return tuple(self.xs[i + 1] - (self.xs[i] + self.fs[i]) for i in range(self.depth))

    def rms(self) -> tuple[list[float], list[float]]:
        """Root-mean-square size of every x_i (L + 1 values) and every F(x_i) (L values)."""
        def size(t: torch.Tensor) -> float:
            return t.detach().pow(2).mean().sqrt().item()

        return [size(x) for x in self.xs], [size(f) for f in self.fs]


def record_stack(blocks: Iterable[nn.Module], x: torch.Tensor) -> StackRecord:
    """Run the stack block by block, keeping every x_i and F(x_i) (autograd graph kept).

    x_{i+1} comes from the block's own forward; F(x_i) from its `residual_branch`, which
    runs the branch a second time. Call `.eval()` first if the blocks hold BatchNorm, or
    the running statistics move twice per block (the recorded values are right either way).
    """
    xs, fs, identity = [x], [], []
    for i, block in enumerate(blocks):
        _check_block(block, i)
        identity.append(is_identity_shortcut(block, xs[-1]))
        fs.append(block.residual_branch(xs[-1]))  # F(x_i)
        xs.append(block(xs[-1]))  # x_{i+1}
    return StackRecord(tuple(xs), tuple(fs), tuple(identity))


def mean_square_loss(y: torch.Tensor) -> torch.Tensor:
    """E(y) = mean(y^2) / 2: a stand-in for the loss, enough to give dE/dx_L a direction."""
    return y.pow(2).mean() / 2


@dataclass(frozen=True)
class GradientIdentity:
    """Both sides of Eq. 5, each computed by autograd.

    lhs:       dE/dx_l, back-propagated through the real blocks.
    direct:    dE/dx_L, the term the identity shortcuts carry to x_l unchanged.
    through_f: dE/dx_L . d/dx_l sum F(x_i), a vector-Jacobian product through the branches.
    """

    lhs: torch.Tensor
    direct: torch.Tensor
    through_f: torch.Tensor

    @property
    def rhs(self) -> torch.Tensor:
        return self.direct + self.through_f

    @property
    def max_abs_diff(self) -> float:
        return (self.lhs - self.rhs).abs().max().item()

    @property
    def direct_share(self) -> float:
        """||dE/dx_L|| / ||dE/dx_l||: how much of the gradient's size arrives with no layer."""
        return (self.direct.norm() / self.lhs.norm()).item()

    @property
    def direct_cosine(self) -> float:
        """cos of the angle between dE/dx_L and dE/dx_l: 1 when the whole gradient points where
        the identity term points, 0 when the branches' term is orthogonal to it and dominates."""
        a, b = self.direct.flatten(), self.lhs.flatten()
        return (a @ b / (a.norm() * b.norm())).item()


def gradient_identity(blocks: Sequence[nn.Module], x_l: torch.Tensor,
                      loss_fn: LossFn = mean_square_loss) -> GradientIdentity:
    """Compute dE/dx_l directly and as dE/dx_L (1 + d/dx_l sum F) (He et al. 2016, Eq. 5).

    Only `.grad` of the input copies is touched: no parameter's `.grad` is written.
    """
    blocks = list(blocks)
    if not blocks:
        raise ValueError("need at least one block, got an empty stack")
    for i, block in enumerate(blocks):
        _check_block(block, i)
    # the branches, kept for the right side; the record also says which blocks add x as is
    x = x_l.detach().requires_grad_(True)
    record = record_stack(blocks, x)
    for i, identity in enumerate(record.identity):
        if not identity:
            raise ValueError(
                f"block {i} ({type(blocks[i]).__name__}) has no identity shortcut; Eq. 5 is "
                "about stacks where every block adds its input unchanged"
            )
    # left side: differentiate E(x_L(x_l)) through the blocks' own forward passes
    x_left = x_l.detach().requires_grad_(True)
    (lhs,) = torch.autograd.grad(loss_fn(run_stack(blocks, x_left)), x_left)
    # dE/dx_L, with x_L treated as a leaf: the gradient arriving at the top of the stack
    x_top = run_stack(blocks, x_l.detach()).detach().requires_grad_(True)
    (direct,) = torch.autograd.grad(loss_fn(x_top), x_top)
    # dE/dx_L . d(sum_i F(x_i))/dx_l: one backward pass through all the branches
    branch_sum = torch.stack(record.fs).sum(0)  # same shape as x_l
    (through_f,) = torch.autograd.grad(branch_sum, x, grad_outputs=direct)
    return GradientIdentity(lhs, direct, through_f)


class LinearBlock(nn.Module):
    """x -> x + W x (residual) or x -> W x (plain): the smallest block with a block's interface.

    W has i.i.d. N(0, scale^2 / width) entries, so E||W v||^2 = scale^2 ||v||^2: `scale` is
    the branch's typical gain.
    """

    def __init__(self, weight: torch.Tensor, residual: bool = True) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
            raise ValueError(f"weight must be a square (width, width) matrix, got shape "
                             f"{tuple(weight.shape)}")
        self.weight = nn.Parameter(weight)
        self.residual = residual
        self.downsample = None  # the shortcut is always the identity (when there is one)

    def residual_branch(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T  # (B, width): W x for every row x

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual_branch(x)
        return out + x if self.residual else out

    def jacobian(self) -> torch.Tensor:
        """dy/dx: W for a plain block, I + W for a residual one."""
        eye = torch.eye(self.weight.shape[0], dtype=self.weight.dtype, device=self.weight.device)
        return self.weight + eye if self.residual else self.weight

    def extra_repr(self) -> str:
        return f"width={self.weight.shape[0]}, residual={self.residual}"


@dataclass(frozen=True)
class LinearStack:
    """A stack of `depth` linear blocks; plain and residual builds share the same W_i."""

    width: int = 64
    depth: int = 50
    scale: float = 0.5
    seed: int = 0
    dtype: torch.dtype = torch.float64  # products of 100 matrices overflow float32 quickly

    def __post_init__(self) -> None:
        for name in ("width", "depth"):
            check_int(name, getattr(self, name), low=1)
        if not isinstance(self.scale, (int, float)) or not self.scale >= 0:
            raise ValueError(f"scale must be a number >= 0, got {self.scale!r}")

    def weights(self) -> list[torch.Tensor]:
        """W_0 .. W_{depth-1}, the same for a given seed whatever is built from them."""
        gen = torch.Generator().manual_seed(self.seed)
        std = self.scale / math.sqrt(self.width)
        return [torch.randn(self.width, self.width, generator=gen, dtype=self.dtype) * std
                for _ in range(self.depth)]

    def build(self, residual: bool = True) -> nn.Sequential:
        return nn.Sequential(*(LinearBlock(w, residual) for w in self.weights()))


def end_to_end_jacobians(stack: Iterable[LinearBlock]) -> list[torch.Tensor]:
    """dx_k/dx_0 for k = 1..L: prod of W_i (plain) or of (I + W_i) (residual), last on the left."""
    jacobians, total = [], None
    for i, block in enumerate(stack):
        if not isinstance(block, LinearBlock):
            raise ValueError(f"block {i} must be a LinearBlock, got {type(block).__name__}")
        step = block.jacobian()
        total = step if total is None else step @ total  # chain rule: J_{k+1} = M_k J_k
        jacobians.append(total)
    return jacobians


@dataclass(frozen=True)
class JacobianGains:
    """Norms of dx_k/dx_0 after each block k = 1..L."""

    depths: tuple[int, ...]
    rms: tuple[float, ...]  # ||J||_F / sqrt(width): the gain of a typical direction
    spectral: tuple[float, ...] | None  # the largest gain any direction can get (on request)


def jacobian_gains(stack: Iterable[LinearBlock], spectral: bool = False) -> JacobianGains:
    """RMS norm (and, if asked, spectral norm) of the end-to-end Jacobian after every block.

    The spectral norm needs an SVD per depth, far slower than the Frobenius norm, so it is
    computed only when asked for.
    """
    jacobians = end_to_end_jacobians(stack)
    if not jacobians:
        raise ValueError("need at least one block, got an empty stack")
    width = jacobians[0].shape[0]
    rms = tuple((torch.linalg.matrix_norm(j) / math.sqrt(width)).item() for j in jacobians)
    largest = (tuple(torch.linalg.matrix_norm(j, ord=2).item() for j in jacobians)
               if spectral else None)
    return JacobianGains(tuple(range(1, len(jacobians) + 1)), rms, largest)


def expected_rms_gain(scale: float, depth: int, residual: bool) -> float:
    """E||J v||^2 / ||v||^2 under the square root, for W_i ~ N(0, scale^2 / width).

    Plain: each W multiplies the expected squared norm by scale^2, so the gain is scale^depth.
    Residual: E||(I + W) v||^2 = ||v||^2 + E||W v||^2 (the cross term has mean zero), so
    (1 + scale^2)^(depth / 2): it never collapses, but it does grow.
    """
    check_int("depth", depth, low=0)
    if not isinstance(scale, (int, float)) or not scale >= 0:
        raise ValueError(f"scale must be a number >= 0, got {scale!r}")
    return (1 + scale**2) ** (depth / 2) if residual else float(scale) ** depth
