"""diagnose: silent on correct ResNets (ours and torchvision's), finds each planted bug."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnet_edu import models
from resnet_edu.course import suspects
from resnet_edu.diagnostics import (
    CHECKS,
    EXPLODING,
    diagnose,
    gradient_verdict,
    is_probability_output,
    projection_needed,
    residual_blocks,
    stem_downsampling,
)
from resnet_edu.shape_trace import cost

SMALL = (3, 32, 32)
# large enough that the ImageNet stem is right for it (> 64), small enough to be quick
IMAGENET_TEST = (1, 3, 72, 72)


def tiny(block, **kwargs) -> nn.Module:
    return suspects.TinyResNet(block, **kwargs)


# ------------------------------------------------------------------ no false alarms


NARROW = 16  # the block structure of the full nets at a quarter of the width: same checks


@pytest.mark.parametrize("make", [
    *(partial(getattr(models, f"resnet{d}"), width=NARROW) for d in (18, 34, 50, 101, 152)),
    torchvision.models.resnet18, torchvision.models.resnet50,
], ids=["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "torchvision.resnet18",
        "torchvision.resnet50"])
def test_imagenet_resnets_have_no_findings(make):
    model = make()
    report = diagnose(model, IMAGENET_TEST)
    assert report.findings == (), str(report)
    assert len(report.blocks) == sum(len(getattr(model, f"layer{i}")) for i in range(1, 5))
    assert len(report.gradients) == len(report.blocks)


@pytest.mark.parametrize("make", [
    lambda: models.resnet18_cifar(),
    lambda: models.resnet18_cifar(zero_init_residual=True),
    lambda: models.cifar_resnet(20, shortcut="A"),
    lambda: models.cifar_resnet(56, shortcut="B"),
    lambda: models.cifar_resnet(20, shortcut="D"),
    lambda: models.cifar_resnet(20, preact=True),
    lambda: models.cifar_resnet(20, preact=True, shortcut="B"),
    lambda: tiny(suspects.GoodBlock, depth=9),
], ids=["r18_cifar", "r18_cifar_zero", "c20A", "c56B", "c20D", "c20_preact", "c20_preactB",
        "tiny_good"])
def test_cifar_resnets_have_no_findings(make):
    report = diagnose(make(), SMALL)
    assert report.findings == (), str(report)
    assert "no findings" in str(report)


@pytest.mark.parametrize("preact", [False, True], ids=["post", "preact"])
def test_resnet110_is_not_flagged_and_far_from_the_exploding_threshold(preact):
    # correct deep ResNets grow the gradient on its way back, but slowly: ResNet-1202 at
    # width 4 stays near 1e3 (too slow for a unit test; see model_checks.EXPLODING)
    report = diagnose(models.cifar_resnet(110, preact=preact), SMALL)
    assert report.findings == (), str(report)
    assert len(report.gradients) == 54
    assert 1 < report.gradient_through_stack < EXPLODING / 100


def test_option_c_is_reported_once_as_a_deliberate_choice_and_can_be_ignored():
    model = models.cifar_resnet(20, shortcut="C")
    report = diagnose(model, SMALL)
    assert report.checks == ("unneeded-projection",)
    (finding,) = report.findings
    # every block except the three whose shape changes... option C projects all of them
    stride1_same = [b.name for b in report.blocks if b.input_shape == b.output_shape]
    assert finding.where.split(", ") == stride1_same
    assert "option C" in finding.why
    # what they cost, counted from the model, and He et al.'s evidence for each depth
    modules = dict(model.named_modules())
    extra = sum(p.numel() for b in report.blocks if b.name in stride1_same
                for p in modules[b.shortcut].parameters())
    total = sum(p.numel() for p in model.parameters())
    assert f"They hold {extra:,} parameters, {extra / total:.1%} of the model's" in finding.what
    assert "24.19 %" in finding.why and "12.22 %" in finding.why
    assert diagnose(model, SMALL, ignore=("unneeded-projection",)).findings == ()


def test_diagnose_leaves_the_model_as_it_was():
    model = models.cifar_resnet(20).eval()
    model.layer1[0].train()  # a mixed state must come back mixed
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {n: m.training for n, m in model.named_modules()}
    diagnose(model, SMALL)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert modes == {n: m.training for n, m in model.named_modules()}
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- each planted bug


@pytest.mark.parametrize("name, check", sorted(suspects.PLANTED.items()))
def test_each_planted_bug_is_found(name, check):
    cls = getattr(suspects, name)
    depth = 9 if check == "gradient-flow" else 2  # a vanishing gradient needs a deep stack
    if issubclass(cls, suspects.TinyResNet):
        model, fixed = cls(suspects.GoodBlock, depth=depth), tiny(suspects.GoodBlock, depth=depth)
    else:
        model, fixed = tiny(cls, depth=depth), tiny(suspects.GoodBlock, depth=depth)
    report = diagnose(model, SMALL)
    assert check in report.checks, str(report)
    finding = next(f for f in report.findings if f.check == check)
    # `where` names modules the model really has (or its output)
    named = re.findall(r"layers[\w.]*\w", finding.where)
    modules = dict(model.named_modules())
    assert all(n in modules for n in named), (finding.where, named)
    assert named or finding.where == "the model output"
    assert diagnose(fixed, SMALL).findings == ()  # the same net without the mistake is clean


def test_forward_error_names_the_stride1_block_and_the_missing_attribute():
    model = tiny(suspects.ForgetfulBlock)
    with pytest.raises(AttributeError, match="in_channels"):  # the oracle: run it
        model(torch.randn(2, *SMALL))
    (finding,) = diagnose(model, SMALL).findings
    assert finding.check == "forward-error"
    assert finding.where == "layers.0.0"  # 16 -> 16, stride 1: the `or` does not short-circuit
    assert "in_channels" in finding.what
    # the stride-2 blocks alone run: the bug hides on the path that does not need it
    model.layers[1](torch.randn(2, 16, 32, 32))


def test_shape_mismatch_reports_both_shapes_and_the_stride_to_use():
    model = tiny(suspects.StrideOneShortcutBlock)
    report = diagnose(model, SMALL)
    finding = next(f for f in report.findings if f.check == "shape-mismatch")
    assert finding.where == "layers.1.0"
    block = model.layers[1][0]
    x = torch.randn(2, 16, 32, 32)
    main, short = block.main_path(x).shape, block.shortcut(x).shape  # the oracle
    assert str(tuple(main)) in finding.what and str(tuple(short)) in finding.what
    assert "stride=2" in finding.fix
    assert "shortcut-activation" in report.checks  # its ReLU is the second planted mistake


def test_shape_mismatch_for_a_missing_projection():
    class NoProjection(suspects.GoodBlock):
        def forward(self, x):
            return self.relu(self.main_path(x) + x)  # identity even where shapes change

    finding = diagnose(tiny(NoProjection), SMALL).findings[0]
    assert finding.check == "shape-mismatch" and finding.where == "layers.1.0"
    assert "(2, 32, 16, 16)" in finding.what and "(2, 16, 32, 32)" in finding.what


def test_unneeded_projection_flags_only_the_blocks_whose_shape_does_not_change():
    model = tiny(suspects.AlwaysProjectBlock, depth=2)
    (finding,) = diagnose(model, SMALL).findings
    expected = [n for n, m in residual_blocks(model)
                if m.conv1.stride == (1, 1) and m.conv1.in_channels == m.conv2.out_channels]
    assert finding.where.split(", ") == expected == ["layers.0.0", "layers.0.1", "layers.1.1",
                                                     "layers.2.1"]
    # a projection on every block is option C, whether meant or not: the finding says so
    assert "option C" in finding.why


def test_bias_before_norm_counts_the_wasted_parameters():
    model = tiny(suspects.BiasBeforeNormBlock, depth=2)
    (finding,) = diagnose(model, SMALL).findings
    wasted = sum(m.bias.numel() for m in model.modules()
                 if isinstance(m, nn.Conv2d) and m.bias is not None)
    assert f"({wasted} wasted parameters)" in finding.what
    assert len(finding.where.split(", ")) == 2 * 6  # two convs in each of the 6 blocks


def test_bias_followed_by_something_else_is_not_flagged():
    class BiasThenReLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)  # bias=True, but no BN after it
            self.relu = nn.ReLU()
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            return self.fc(self.bn(self.relu(self.conv(x))).mean(dim=(2, 3)))

    assert diagnose(BiasThenReLU(), SMALL).findings == ()


def test_softmax_output_is_found_and_log_softmax_is_not():
    class LogSoftmaxNet(suspects.TinyResNet):
        def forward(self, x):  # log-probabilities: fine with NLLLoss, and harmless with CE
            return torch.log_softmax(self.logits(x), dim=1)

    assert diagnose(suspects.SoftmaxResNet(suspects.GoodBlock), SMALL).checks == ("softmax-output",)
    assert diagnose(LogSoftmaxNet(suspects.GoodBlock), SMALL).findings == ()
    z = torch.randn(4, 10)
    assert is_probability_output(z.softmax(1)) and not is_probability_output(z)
    # the reason it matters: CE on probabilities cannot go near 0, CE on logits can
    y = torch.zeros(4, dtype=torch.long)
    confident = torch.full((4, 10), -20.0)
    confident[:, 0] = 20.0
    assert nn.functional.cross_entropy(confident, y) < 1e-6
    assert nn.functional.cross_entropy(confident.softmax(1), y) > 1.4


def test_imagenet_stem_on_small_input_and_full_resolution_on_large_input():
    assert diagnose(models.resnet18(num_classes=10), SMALL).checks == (
        "imagenet-stem-small-input",)
    report = diagnose(models.cifar_resnet(8), (2, 3, 128, 128))
    assert report.checks == ("full-resolution-large-input",)
    assert "16x larger" in report.findings[0].why  # (128 * 128) / (32 * 32)
    assert diagnose(models.cifar_resnet(8), (2, 3, 96, 96)).findings == ()  # in between


def test_train_mode_and_autograd_during_evaluation():
    model = models.cifar_resnet(8)
    model.train()
    report = diagnose(model, SMALL, evaluating=True)
    assert report.checks == ("train-mode-in-eval", "grad-in-eval")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert report.findings[0].what.startswith(f"{n_bn} BatchNorm")
    model.eval()
    assert diagnose(model, SMALL, evaluating=True).checks == ("grad-in-eval",)
    with torch.no_grad():
        assert diagnose(model, SMALL, evaluating=True).findings == ()
    assert diagnose(model.train(), SMALL).findings == ()  # training: train mode is right


def test_gradient_ratios_match_autograd():
    model = tiny(suspects.GoodBlock, depth=2)
    report = diagnose(model, SMALL, seed=3)
    # the oracle: the same input and labels, autograd.grad on the block boundaries
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((2, *SMALL), generator=gen)
    labels = torch.randint(0, 10, (2,), generator=gen)
    blocks = [m for stage in model.layers for m in stage]
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for b in blocks]
    hooks += [b.register_forward_hook(lambda m, a, y: seen.append(y)) for b in blocks]
    model.train()
    loss = nn.functional.cross_entropy(model(x), labels)
    for h in hooks:
        h.remove()
    grads = torch.autograd.grad(loss, seen)
    norms = [g.norm().item() for g in grads]  # in, out, in, out ... in call order
    # the pre-hook and hook append in call order: in_0, out_0, in_1 (= out_0), ...
    ins, outs = norms[0::2], norms[1::2]
    assert [g.block for g in report.gradients] == [
        f"layers.{i}.{j}" for i in range(3) for j in range(2)]
    for g, gi, go in zip(report.gradients, ins, outs, strict=True):
        assert g.grad_in == pytest.approx(gi, rel=1e-4)
        assert g.grad_out == pytest.approx(go, rel=1e-4)
    assert report.gradient_through_stack == pytest.approx(ins[0] / outs[-1], rel=1e-3)


def test_detached_shortcut_makes_the_gradient_vanish_and_the_good_block_does_not():
    bad = diagnose(tiny(suspects.DetachedShortcutBlock, depth=9), SMALL)
    good = diagnose(tiny(suspects.GoodBlock, depth=9), SMALL)
    assert bad.checks == ("gradient-flow",) and "vanishing" in bad.findings[0].what
    assert bad.gradient_through_stack < 1e-2 < 1 < good.gradient_through_stack


def test_rules():
    assert projection_needed((2, 16, 32, 32), (2, 32, 16, 16))
    assert not projection_needed((2, 16, 32, 32), (2, 16, 32, 32))
    assert stem_downsampling(32, 8) == 4 and stem_downsampling(224, 56) == 4
    assert stem_downsampling(32, 32) == 1
    assert gradient_verdict(1e-3) == "vanishing" and gradient_verdict(1e6) == "exploding"
    assert gradient_verdict(10.0) is None


def test_blocks_are_found_in_ours_torchvisions_and_students_code():
    assert [n for n, _ in residual_blocks(models.resnet18())] == [
        f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert len(residual_blocks(torchvision.models.resnet50())) == 16
    assert len(residual_blocks(tiny(suspects.GoodBlock, depth=3))) == 9
    report = diagnose(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), SMALL)
    assert report.findings == () and any("no residual addition" in s for s in report.skipped)


def test_bad_input_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="input_shape must be"):
        diagnose(models.cifar_resnet(8), (32, 32))
    with pytest.raises(ValueError, match="input_shape must be"):
        diagnose(models.cifar_resnet(8), (3, 32, 0))
    with pytest.raises(ValueError, match=r"nn\.Module"):
        diagnose(lambda x: x, SMALL)
    with pytest.raises(ValueError, match="ignore must name"):
        diagnose(models.cifar_resnet(8), SMALL, ignore=("softmax",))
    assert set(suspects.PLANTED.values()) <= set(CHECKS)


# ---------------------------------------------------------------------------- cost


@pytest.mark.parametrize("make, shape", [
    (models.resnet18_cifar, (3, 32, 32)),
    (models.resnet50, (3, 64, 64)),
    (lambda: models.cifar_resnet(20), (3, 32, 32)),
])
def test_cost_matches_torch_flop_counter(make, shape):
    model = make()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    assert cost(model, shape).macs * 2 == counter.get_total_flops()


def test_resizing_32_to_224_with_the_cifar_stem_costs_49x():
    model = models.cifar_resnet(20)
    small, large = cost(model, (3, 32, 32)), cost(model, (3, 224, 224))
    assert large.activations / small.activations == pytest.approx(49, rel=1e-3)
    assert large.macs / small.macs == pytest.approx(49, rel=1e-3)  # the fc is all that's fixed


# ------------------------------------------------------- the examples behave as documented


def test_construction_mistakes_raise_when_an_instance_is_made():
    with pytest.raises(TypeError, match="super"):
        suspects.MisnamedSuperBlock(16, 16)
    with pytest.raises(AttributeError, match=r"before Module\.__init__"):
        suspects.LateSuperResNet()


def test_forgetting_eval_makes_predictions_depend_on_the_batch():
    model = models.cifar_resnet(8)
    x = torch.randn(8, *SMALL)
    running = model.bn1.running_mean.clone()
    alone = suspects.evaluate_correctly(model, x[:1])
    assert torch.equal(alone, suspects.evaluate_correctly(model, x)[:1])
    assert torch.equal(model.bn1.running_mean, running) and model.training
    model.train()
    with torch.no_grad():
        logits_batch = model(x)[:1]
        logits_mixed = model(torch.cat([x[:1], 5 * x[1:]]))[:1]
    assert not torch.allclose(logits_batch, logits_mixed, atol=1e-3)  # depends on the others
    suspects.evaluate_forgetting_eval(model, x)
    assert not torch.equal(model.bn1.running_mean, running)  # and it changed the model
