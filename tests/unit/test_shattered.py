"""Shattered gradients (Balduzzi et al. 2017): 1-input nets, per-point input gradients, their
autocorrelation."""


import pytest
import torch

from resnet_edu.shattered import (
    autocorrelation,
    fc_net,
    input_gradients,
    lag1_correlation,
    predicted_rates,
)


def test_fc_net_maps_a_sweep_to_one_output_per_point():
    x, g = input_gradients(fc_net(3, "residual-bn"))
    assert x.shape == g.shape == (256,)
    assert float(x[0]) == -2.0 and float(x[-1]) == 2.0


def test_per_point_gradients_with_bn_do_not_mix_points():
    torch.manual_seed(0)
    net = fc_net(4, "plain-bn")
    x, g = input_gradients(net)
    xs = x.clone().reshape(-1, 1).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(lambda v: net(v).reshape(-1), xs).reshape(256, 256)
    assert torch.allclose(torch.diagonal(jac), g, atol=1e-5)
    assert (jac - torch.diag(torch.diagonal(jac))).abs().max() < 1e-6  # no cross terms


def test_zero_biases_leave_two_gradient_values_at_any_depth():
    torch.manual_seed(0)
    _, g = input_gradients(fc_net(30, "plain", zero_bias=True))
    assert g.unique().numel() <= 2


def test_plain_bn_shatters_and_residual_bn_does_not():
    deep_plain = sum(lag1_correlation(24, "plain-bn", s) for s in range(2)) / 2
    deep_res = sum(lag1_correlation(24, "residual-bn", s) for s in range(2)) / 2
    assert abs(deep_plain) < 0.3 < 0.6 < deep_res
    assert lag1_correlation(1, "plain-bn") > 0.9


def test_autocorrelation():
    r = autocorrelation(torch.sin(torch.linspace(0, 6, 256)), 3)
    assert float(r[0]) == pytest.approx(1.0) and float(r[1]) > 0.95
    noise = autocorrelation(torch.randn(4096, generator=torch.Generator().manual_seed(0)), 1)
    assert abs(float(noise[1])) < 0.05
    with pytest.raises(ValueError, match="constant"):
        autocorrelation(torch.ones(10))
    with pytest.raises(ValueError, match="kind must be one of"):
        fc_net(3, "dense")
    assert predicted_rates([1, 4])["plain-bn"] == [0.5, 2.0**-4]
