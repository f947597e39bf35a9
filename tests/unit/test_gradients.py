"""Per-layer gradient norms: autograd's .backward() is the oracle; the model is left alone."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from resnet_edu import models
from resnet_edu.gradients import (
    ACTIVATION,
    WEIGHT,
    GradientNorms,
    NormRow,
    compare_nets,
    drift_decades,
    gradient_norms,
    is_residual_block,
)
from resnet_edu.models import cifar_resnet
from resnet_edu.residual_trace import residual_block_names


def _batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def _oracle_weight_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """||dL/dW|| by .backward() on a copy, for every conv/linear weight."""
    twin = copy.deepcopy(model).train()
    nn.functional.cross_entropy(twin(x), y).backward()
    return {name: m.weight.grad.double().norm().item() for name, m in twin.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.mark.parametrize("residual", [True, False])
def test_weight_norms_match_backward(residual):
    model = cifar_resnet(8, residual=residual)
    x, y = _batch()
    table = gradient_norms(model, x, y)
    oracle = _oracle_weight_norms(model, x, y)
    assert set(table.layers()) == set(oracle)
    for row in table.of_kind(WEIGHT):
        assert row.norm == pytest.approx(oracle[row.layer], rel=1e-5)


def test_rows_are_in_forward_order_and_count_the_layers():
    table = gradient_norms(cifar_resnet(14), *_batch(4))
    # 6n+2 weight layers: the stem conv, two convs per block, the fc
    assert len(table.of_kind(WEIGHT)) == 14
    assert table.layers()[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert table.layers()[-1] == "fc"
    assert [r.depth for r in table.of_kind(WEIGHT)] == list(range(1, 15))


def test_projection_shortcut_is_placed_by_when_it_runs():
    # option B: layer2.0's 1x1 projection runs after the block's two convs
    table = gradient_norms(cifar_resnet(8, shortcut="B"), *_batch(4))
    names = table.layers()
    assert len(names) == 10
    i = names.index("layer2.0.downsample.0")
    assert names[i - 2:i] == ["layer2.0.conv1", "layer2.0.conv2"]


def test_activation_norms_match_retain_grad():
    model = cifar_resnet(14)
    x, y = _batch()
    table = gradient_norms(model, x, y, activations=True)
    twin = copy.deepcopy(model).train()
    outs = []
    h = twin.relu(twin.bn1(twin.conv1(x)))
    for stage in (twin.layer1, twin.layer2, twin.layer3):
        for block in stage:
            h = block(h)
            h.retain_grad()
            outs.append(h)
    logits = twin.fc(torch.flatten(twin.avgpool(h), 1))
    nn.functional.cross_entropy(logits, y).backward()
    expected = [o.grad.double().norm().item() for o in outs]
    rows = table.of_kind(ACTIVATION)
    assert [r.layer for r in rows] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1)]
    assert [r.norm for r in rows] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_model_is_left_as_it_was(training):
    model = cifar_resnet(8).train(training)
    fc = model.fc
    fc.weight.grad = torch.full_like(fc.weight, 7.0)  # a gradient the caller already had
    before = copy.deepcopy(model.state_dict())
    gradient_norms(model, *_batch(), activations=True)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:  # BN running stats and num_batches_tracked included
        assert torch.equal(before[k], after[k]), k
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    assert torch.equal(fc.weight.grad, torch.full_like(fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_hooks_are_removed_when_the_forward_fails():
    model = cifar_resnet(8)
    with pytest.raises(ValueError, match="3 input channels, got 1"):  # the model's own check
        gradient_norms(model, torch.randn(2, 1, 32, 32), torch.tensor([0, 1]),
                       activations=True)
    assert all(not m._forward_hooks for m in model.modules())


def test_train_mode_off_uses_running_stats():
    model = cifar_resnet(8)
    x, y = _batch()
    table = gradient_norms(model, x, y, train_mode=False)
    twin = copy.deepcopy(model).eval()
    nn.functional.cross_entropy(twin(x), y).backward()
    assert table.norms()[0] == pytest.approx(twin.conv1.weight.grad.norm().item(), rel=1e-5)


def test_frozen_layers_are_left_out():
    model = cifar_resnet(8)
    model.conv1.weight.requires_grad_(False)
    table = gradient_norms(model, *_batch(4))
    assert "conv1" not in table.layers() and len(table.layers()) == 7


def test_bad_input_says_what_was_expected():
    model = cifar_resnet(8)
    x, y = _batch(4)
    with pytest.raises(ValueError, match="one label per image"):
        gradient_norms(model, x, y[:3])
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        gradient_norms(model, x.numpy(), y)
    with pytest.raises(ValueError, match=r"nn\.Module"):
        gradient_norms(lambda t: t, x, y)
    with pytest.raises(ValueError, match="kind"):
        GradientNorms(()).norms("bias")


def test_ratio_and_drift():
    rows = (NormRow("a", 1, WEIGHT, 1e-3), NormRow("b", 2, WEIGHT, 1.0),
            NormRow("a", 1, ACTIVATION, 0.0), NormRow("b", 2, ACTIVATION, 2.0))
    t = GradientNorms(rows)
    assert t.ratio() == pytest.approx(1e-3)
    assert drift_decades(t, WEIGHT) == pytest.approx(-3)
    assert drift_decades(t, ACTIVATION) == -math.inf
    assert t.records()[0] == {"layer": "a", "depth": 1, "kind": WEIGHT, "norm": 1e-3}
    assert GradientNorms.from_records(t.records()) == t
    with pytest.raises(ValueError, match="layer, depth, kind, norm"):
        GradientNorms.from_records([{"layer": "a"}])
    both_zero = GradientNorms((NormRow("a", 1, WEIGHT, 0.0), NormRow("b", 2, WEIGHT, 0.0)))
    with pytest.raises(ValueError, match="undefined"):
        drift_decades(both_zero, WEIGHT)
    with pytest.raises(ValueError, match="no activation rows"):
        GradientNorms(rows[:2]).ratio(ACTIVATION)


def test_compare_nets_reseeds_each_build():
    x, y = _batch(4)
    build = {"one": lambda: cifar_resnet(8), "two": lambda: cifar_resnet(8)}
    tables = compare_nets(build, x, y)
    assert tables["one"].norms() == tables["two"].norms()


def test_plain_net_without_bn_vanishes_where_the_resnet_does_not():
    # He et al. 2015, Sec. 1: the identity path carries the gradient back unchanged
    x, y = _batch(4)
    tables = compare_nets({
        "plain": lambda: cifar_resnet(20, residual=False, norm_layer=nn.Identity,
                                      init="default"),
        "resnet": lambda: cifar_resnet(20, residual=True, norm_layer=nn.Identity,
                                       init="default"),
    }, x, y)
    assert drift_decades(tables["plain"]) < -3
    assert abs(drift_decades(tables["resnet"])) < 1


def test_exercise_checks_give_feedback_and_never_raise():
    from resnet_edu.course.nb02_gradient_flow import check_shortcut_forward, check_weight_spread
    from resnet_edu.shortcuts import ZeroPadShortcut

    def after_relu(block, x):  # the shortcut in the wrong place: ReLU(F(x)) + x
        out = block.relu(block.residual_branch(x))
        if out.shape != x.shape:
            x = ZeroPadShortcut(block.inplanes, block.out_channels, block.stride)(x)
        return out + x

    wrong = check_shortcut_forward(after_relu)
    assert not wrong and "AFTER the block's last ReLU" in wrong.message
    assert "not attempted" in check_shortcut_forward(lambda block, x: ...).message
    assert not check_weight_spread(lambda table: 1.0, 20.0)
    assert "one number" in check_weight_spread(lambda table: "fc", 1.0).message


def _table(weights: list[float], blocks: list[float]) -> GradientNorms:
    rows = [NormRow(f"w{i}", i + 1, WEIGHT, n) for i, n in enumerate(weights)]
    rows += [NormRow(f"b{i}", i + 1, ACTIVATION, n) for i, n in enumerate(blocks)]
    return GradientNorms(tuple(rows))


def test_summary_line_prints_decades_and_underflow():
    from resnet_edu.gradients import (
        FLOAT32_TINY,
        SUMMARY_HEADER,
        decades,
        drift_or_underflow,
        summary_line,
        underflowed,
    )

    healthy = _table([30.0, 2.0, 1.0, 0.03], [2000.0, 1.0])
    assert summary_line("plain-56", healthy).split() == ["plain-56", "+3.0", "1e+00", "+3.3"]
    # a subnormal float32 (what survives depends on the CPU) reads as underflow, like 0
    vanished = _table([1e-44, 0.0, 0.0, 1e-3], [1e-40, 1e-2])
    assert underflowed(1e-40) and not underflowed(FLOAT32_TINY)
    assert drift_or_underflow(vanished) == -math.inf and decades(-math.inf) == "underflow"
    assert summary_line("plain-110", vanished).split() == ["plain-110", "underflow",
                                                           "underflow", "underflow"]
    assert decades(-0.36) == "-0.4" and "drift" in SUMMARY_HEADER


def test_gradient_blocks_by_type_are_the_traced_blocks_and_the_plain_twins():
    images = torch.randn(2, 3, 32, 32)
    traced = residual_block_names(models.cifar_resnet(8), images)  # the oracle: what adds
    assert traced == ["layer1.0", "layer2.0", "layer3.0"]
    for residual in (True, False):
        model = models.cifar_resnet(8, residual=residual)
        assert [n for n, m in model.named_modules() if is_residual_block(m)] == traced
