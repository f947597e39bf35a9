"""Checks for notebook 01, the residual formula.

Each check runs the student's answer on its own small, seeded example and compares it with
an oracle: the block itself, a parameter count, autograd, or the expectation in
`resnet_edu.stacks`. The global random state is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..blocks import BasicBlock, PreActBlock
from ..stacks import LinearStack, expected_rms_gain
from . import NotYet, close, exercise


def _seeded_preact_block(channels: int = 8) -> PreActBlock:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        block = PreActBlock(channels, channels).double().eval()
        for m in block.modules():  # non-trivial BatchNorms, so F(x) != 0
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
    return block


@exercise
def check_make_identity(make_identity: Callable[[PreActBlock], object]) -> str:
    """Exercise 1: change one layer of a PreActBlock so that block(x) == x for every x."""
    block = _seeded_preact_block()
    before = {n: p.detach().clone() for n, p in block.named_parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        x = torch.randn(4, 8, 6, 6, dtype=torch.float64) * 3  # both signs, several scales
    make_identity(block)
    changed = sorted(n for n, p in block.named_parameters()
                     if p.shape != before[n].shape or not torch.equal(p.detach(), before[n]))
    if not changed:
        raise NotYet("the block is unchanged, so block(x) = x + F(x) with F(x) != 0. Which "
                     "single layer of F (see `block.residual_branch`), set to zero, makes "
                     "F(x) = 0 for every x?")
    layers = {n.rsplit(".", 1)[0] for n in changed}
    if len(layers) > 1:
        raise NotYet(f"you changed {len(layers)} layers ({', '.join(sorted(layers))}); one is "
                     "enough, and the others should keep their values so they can still learn")
    with torch.no_grad():
        y, f = block(x), block.residual_branch(x)
    if not torch.allclose(y, x, rtol=0, atol=1e-12):
        raise NotYet(f"you changed {layers.pop()}, but F(x) is still not zero (max |F(x)| = "
                     f"{f.abs().max().item():.2g}). Zeroing a layer's weight does not always "
                     "zero its output: what does a BatchNorm with zero weight still add?")
    return (f"with {layers.pop()} zeroed, F(x) = 0 and the block is exactly the identity. "
            "This is the 'easy default' of He et al. 2015: a block that is not needed can "
            "learn to vanish.")


@exercise
def check_shortcut_parameters(identity_extra: object, projection_extra: object) -> str:
    """Exercise 2: how many parameters does each kind of shortcut add to a BasicBlock?"""
    for name, value in (("identity_extra", identity_extra),
                        ("projection_extra", projection_extra)):
        if value is Ellipsis:
            raise NotYet(f"fill in {name} with a number (replace the `...`)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise NotYet(f"{name} should be a whole number of parameters, got {value!r}")

    def extra(block: BasicBlock) -> int:
        return sum(p.numel() for p in block.parameters()) - sum(
            p.numel() for n, p in block.named_parameters() if not n.startswith("downsample"))

    want_identity = extra(BasicBlock(64, 64))  # option B: identity where shapes match
    want_projection = extra(BasicBlock(64, 128, stride=2))  # 1x1 conv W_s + its BatchNorm
    if identity_extra != want_identity:
        raise NotYet(f"identity_extra = {identity_extra}: the identity shortcut just adds x "
                     "to F(x). Does adding need any weights?")
    if projection_extra == 64 * 128:
        raise NotYet("the 1x1 convolution is right (64 x 128 weights, no bias), but the "
                     "projection is followed by a BatchNorm with its own weight and bias")
    if projection_extra != want_projection:
        raise NotYet(f"projection_extra = {projection_extra}: count the 1x1 convolution "
                     "64 -> 128 (no bias, as in torchvision) and its BatchNorm(128)")
    return (f"an identity shortcut adds {want_identity} parameters and a projection adds "
            f"{want_projection}: shortcuts never reduce the parameter count, and no weights "
            "are shared between blocks.")


def _wrong_gradients(weights: list[torch.Tensor], g_top: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The usual slips, so the check can say which one was made."""
    eye = torch.eye(len(g_top), dtype=g_top.dtype)
    plain, no_transpose, wrong_order = g_top, g_top, g_top
    for w in reversed(weights):
        plain = w.T @ plain
        no_transpose = (eye + w) @ no_transpose
    for w in weights:
        wrong_order = (eye + w).T @ wrong_order
    return {"plain": plain, "no_transpose": no_transpose, "wrong_order": wrong_order}


@exercise
def check_predict_gradient(
    predict: Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]) -> str:
    """Exercise 3: dE/dx_0 of x_{i+1} = x_i + W_i x_i, given dE/dx_L, without autograd."""
    stack = LinearStack(width=5, depth=4, scale=0.8, seed=7).build(residual=True)
    weights = [block.weight.detach().clone() for block in stack]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        x0 = torch.randn(5, dtype=torch.float64, requires_grad=True)
        g_top = torch.randn(5, dtype=torch.float64)
    x_top = stack(x0.unsqueeze(0)).squeeze(0)  # (5,)
    (want,) = torch.autograd.grad(x_top, x0, grad_outputs=g_top)  # the oracle: autograd
    got = predict([w.clone() for w in weights], g_top.clone())
    if not isinstance(got, torch.Tensor):
        raise NotYet(f"return a tensor of shape (5,), got {type(got).__name__}")
    if got.shape != want.shape:
        raise NotYet(f"return a tensor of shape {tuple(want.shape)} (like g_L), got "
                     f"{tuple(got.shape)}")
    got = got.detach().to(torch.float64)
    if torch.allclose(got, want, rtol=1e-6, atol=1e-9):
        return ("your gradient matches autograd: g_l = (I + W_l)^T ... (I + W_{L-1})^T g_L, "
                "whose expansion starts with g_L itself, the term no layer can block.")
    hints = {
        "plain": "that is the plain stack's gradient, W^T ... W^T g_L: the identity term is "
                 "missing (each block's Jacobian is I + W_i)",
        "no_transpose": "the chain rule multiplies by the Jacobian *transposed*: "
                        "(I + W_i)^T, not (I + W_i)",
        "wrong_order": "right factors, wrong order: the gradient meets the last block "
                       "first, so start from W_{L-1}",
    }
    for name, wrong in _wrong_gradients(weights, g_top).items():
        if torch.allclose(got, wrong, rtol=1e-6, atol=1e-9):
            raise NotYet(hints[name])
    raise NotYet(f"max |yours - autograd| = {(got - want).abs().max().item():.2g}; apply the "
                 "chain rule one block at a time, from the top: g_i = g_{i+1} + W_i^T g_{i+1}")


@exercise
def check_expected_gain(gain: Callable[[float, int, bool], float]) -> str:
    """Exercise 4: the expected RMS gain of a plain and of a residual linear stack."""
    cases = [(0.5, 10), (1.0, 4), (0.2, 50), (1.5, 3)]
    for residual in (False, True):
        for scale, depth in cases:
            got = gain(scale, depth, residual)
            if not isinstance(got, (int, float)) or isinstance(got, bool):
                raise NotYet(f"return a float, got {type(got).__name__} for scale={scale}, "
                             f"depth={depth}, residual={residual}")
            want = expected_rms_gain(scale, depth, residual)
            if close(got, want, rel=1e-6):
                continue
            kind = "residual" if residual else "plain"
            if residual and close(got, 1 + depth * scale, rel=1e-6):
                raise NotYet("the gains of the blocks multiply, they do not add: the residual "
                             "stack's gain is a product over blocks")
            if residual and close(got, (1 + scale) ** depth, rel=1e-6):
                raise NotYet("(1 + scale)^depth is an upper bound, not the typical gain: "
                             "E||(I + W)v||^2 = ||v||^2 + 2 E[v.Wv] + E||Wv||^2, and "
                             "E[v.Wv] = 0")
            raise NotYet(f"for the {kind} stack with scale={scale}, depth={depth} you gave "
                         f"{got:.4g}; expected {want:.4g}. Start from what one block does "
                         "to E||v||^2, then repeat depth times")
    return ("plain: scale^depth, residual: (1 + scale^2)^(depth/2). The plain gain collapses "
            "(or explodes) geometrically; the residual one never collapses but still grows, "
            "which is why ResNets also need BatchNorm and a careful initialization.")
