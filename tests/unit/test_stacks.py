"""Unrolled stacks: Eq. 4 and Eq. 5 of He et al. 2016 against autograd and the blocks."""

import math

import pytest
import torch
from torch import nn

from resnet_edu.blocks import BasicBlock, PlainPreActBlock, PreActBlock
from resnet_edu.course.exercise import nontrivial_batchnorms
from resnet_edu.plots import plot_gains_vs_depth
from resnet_edu.stacks import (
    LinearBlock,
    LinearStack,
    end_to_end_jacobians,
    expected_rms_gain,
    gradient_identity,
    is_identity_shortcut,
    jacobian_gains,
    record_stack,
    run_stack,
)


def _stack(block, depth=4, channels=6):
    return nn.Sequential(*(block(channels, channels) for _ in range(depth))).double().eval()


def _randomize_norms(stack):
    # BatchNorm starts as the identity map; random affine and running stats make F non-trivial
    nontrivial_batchnorms(stack, spread=0.3)
    return stack


def test_record_matches_the_blocks():
    stack = _randomize_norms(_stack(BasicBlock))
    x = torch.randn(3, 6, 5, 5, dtype=torch.float64)
    rec = record_stack(stack, x)
    assert rec.depth == 4 and len(rec.xs) == 5 and rec.identity == (True,) * 4
    torch.testing.assert_close(rec.xs[-1], stack(x))
    for i, block in enumerate(stack):
        torch.testing.assert_close(rec.fs[i], block.residual_branch(rec.xs[i]))
        torch.testing.assert_close(rec.xs[i + 1], block(rec.xs[i]))


def test_unrolled_sum_holds_exactly_for_preactivation_blocks():
    stack = _randomize_norms(_stack(PreActBlock, depth=5))
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    rec = record_stack(stack, x)
    x_out = stack(x)
    torch.testing.assert_close(rec.unrolled(), x_out, rtol=0, atol=1e-12)
    assert rec.unrolled_error() < 1e-12
    # any span l..L, not only 0..L
    torch.testing.assert_close(rec.unrolled(2, 4), rec.xs[4], rtol=0, atol=1e-12)
    for gap in rec.addition_gaps():
        assert gap.abs().max() < 1e-12


def test_post_activation_gap_is_what_the_relu_clips():
    stack = _randomize_norms(_stack(BasicBlock, depth=3))
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    rec = record_stack(stack, x)
    assert rec.unrolled_error() > 1e-2  # Eq. 4 does not hold after a ReLU
    for i, gap in enumerate(rec.addition_gaps()):
        z = rec.xs[i] + rec.fs[i]
        torch.testing.assert_close(gap, torch.relu(-z))  # ReLU(z) - z
    # adding the clipped parts back closes the sum exactly
    fixed = rec.unrolled() + sum(rec.addition_gaps())
    torch.testing.assert_close(fixed, rec.xs[-1])


def test_unrolled_refuses_blocks_without_identity_shortcut():
    x = torch.randn(1, 6, 4, 4)
    rec = record_stack([PreActBlock(6, 6).eval(), PreActBlock(6, 8, stride=2).eval()], x)
    assert rec.identity == (True, False)
    torch.testing.assert_close(rec.unrolled(0, 1), rec.xs[1])
    with pytest.raises(ValueError, match="block 1 has no identity shortcut"):
        rec.unrolled()
    with pytest.raises(ValueError, match="0 <= l <= L <= 2"):
        rec.unrolled(0, 3)
    assert not is_identity_shortcut(PlainPreActBlock(6, 6), x)
    assert is_identity_shortcut(PreActBlock(6, 6), x)
    with pytest.raises(ValueError, match="residual_branch"):
        record_stack([nn.Identity()], x)


@pytest.mark.parametrize("train", [False, True])
def test_gradient_identity_both_sides_agree_for_preactivation(train):
    stack = _randomize_norms(_stack(PreActBlock, depth=4))
    stack.train(train)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    g = gradient_identity(stack, x)
    assert g.max_abs_diff < 1e-12
    # oracle for the left side: torch.autograd.functional's vjp of the whole stack
    out = stack(x).detach()
    _, expected = torch.autograd.functional.vjp(stack, x, out / out.numel())  # dE/dy = y/numel
    torch.testing.assert_close(g.lhs, expected)
    torch.testing.assert_close(g.direct, out / out.numel())
    assert all(p.grad is None for p in stack.parameters())
    assert 0.05 < g.direct_share < 20  # F's terms change the size, but not by orders here
    cosine = torch.nn.functional.cosine_similarity(g.direct.flatten(), g.lhs.flatten(), dim=0)
    assert g.direct_cosine == pytest.approx(cosine.item(), abs=1e-12)


def test_with_every_branch_zeroed_the_whole_gradient_is_the_direct_term():
    """Zero-init (conv2 = 0) makes every F and its Jacobian 0: Eq. 5 reduces to its "1"."""
    stack = _randomize_norms(_stack(PreActBlock, depth=4))
    for block in stack:
        block.zero_init_last()
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64)
    g = gradient_identity(stack, x)
    torch.testing.assert_close(g.lhs, g.direct, rtol=0, atol=0)
    assert g.direct_share == 1.0


def test_gradient_identity_fails_after_post_activation_relu():
    stack = _randomize_norms(_stack(BasicBlock, depth=3))
    g = gradient_identity(stack, torch.randn(2, 6, 5, 5, dtype=torch.float64))
    assert g.max_abs_diff > 1e-4


def test_gradient_identity_on_a_linear_stack_is_the_transposed_product():
    stack = LinearStack(width=8, depth=6, scale=0.7).build(residual=True)
    x = torch.randn(3, 8, dtype=torch.float64)
    g = gradient_identity(stack, x, loss_fn=lambda y: (y * torch.arange(8.0)).sum())
    jac = end_to_end_jacobians(stack)[-1]
    torch.testing.assert_close(g.rhs, g.direct @ jac)  # row vectors: g_l = g_L J
    torch.testing.assert_close(g.through_f, g.direct @ (jac - torch.eye(8, dtype=jac.dtype)))


def test_gradient_identity_rejects_plain_or_projecting_blocks():
    x = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match="no identity shortcut"):
        gradient_identity([PlainPreActBlock(6, 6)], x)
    with pytest.raises(ValueError, match="no identity shortcut"):
        gradient_identity([PreActBlock(6, 6, shortcut="C")], x)
    with pytest.raises(ValueError, match="empty"):
        gradient_identity([], x)


@pytest.mark.parametrize("residual", [False, True])
def test_end_to_end_jacobians_match_autograd(residual):
    config = LinearStack(width=5, depth=4, scale=0.9, seed=3)
    stack = config.build(residual)
    jacobians = end_to_end_jacobians(stack)
    x = torch.randn(5, dtype=torch.float64)
    for k in range(1, config.depth + 1):
        expected = torch.autograd.functional.jacobian(
            lambda v, k=k: run_stack(stack[:k], v.unsqueeze(0)).squeeze(0), x)
        torch.testing.assert_close(jacobians[k - 1], expected)


def test_plain_and_residual_builds_share_weights_and_differ_by_the_identity():
    config = LinearStack(width=4, depth=3, scale=0.5)
    plain, residual = config.build(False), config.build(True)
    x = torch.randn(2, 4, dtype=torch.float64)
    for p, r in zip(plain, residual, strict=True):
        torch.testing.assert_close(p.weight, r.weight)
        torch.testing.assert_close(r(x) - p(x), x)
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in residual.parameters())  # the identity adds no parameter


def test_gains_spectral_is_the_largest_singular_value_and_bounds_rms():
    config = LinearStack(width=6, depth=5, scale=1.3)
    gains = jacobian_gains(config.build(False), spectral=True)
    last = end_to_end_jacobians(config.build(False))[-1]
    assert gains.depths == (1, 2, 3, 4, 5)
    assert jacobian_gains(config.build(False)).spectral is None
    assert math.isclose(gains.spectral[-1], torch.linalg.svdvals(last)[0].item(), rel_tol=1e-9)
    assert all(s >= r for s, r in zip(gains.spectral, gains.rms, strict=True))


@pytest.mark.parametrize("residual", [False, True])
def test_expected_rms_gain_matches_the_average_over_random_stacks(residual):
    depth, scale = 8, 0.8
    mean_square = sum(
        jacobian_gains(LinearStack(width=32, depth=depth, scale=scale, seed=s).build(residual)
                       ).rms[-1] ** 2
        for s in range(40)
    ) / 40
    expected = expected_rms_gain(scale, depth, residual) ** 2
    assert mean_square == pytest.approx(expected, rel=0.15)


def test_expected_rms_gain_shapes():
    assert expected_rms_gain(0.5, 0, residual=False) == 1.0
    assert expected_rms_gain(0.5, 10, residual=False) == pytest.approx(0.5**10)
    assert expected_rms_gain(0.5, 10, residual=True) == pytest.approx(1.25**5)
    with pytest.raises(ValueError, match="depth"):
        expected_rms_gain(0.5, -1, residual=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"width": 0}, "width"), ({"depth": 2.5}, "depth"), ({"scale": -1.0}, "scale")],
)
def test_linear_stack_rejects_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinearStack(**kwargs)
    with pytest.raises(ValueError, match="square"):
        LinearBlock(torch.zeros(2, 3))


def test_plot_draws_measured_and_expected_on_log_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_gains_vs_depth(LinearStack(width=8, depth=6))
    labels = [line.get_label() for line in ax.get_lines()]
    assert ax.get_yscale() == "log"
    assert {"plain: measured", "plain: expected (RMS)", "residual: measured",
            "residual: expected (RMS)"} <= set(labels)
    with pytest.raises(ValueError, match="kinds"):
        plot_gains_vs_depth(LinearStack(width=8, depth=6), kinds=("both",))
    plt.close("all")
