"""diagnose on ResNet code written the ways it is written in the wild.

Each model below is written for this test in a style common in blog posts, course
write-ups and popular repositories: attributes named anything (`conv1/conv2/conv3`,
`left/right`), shortcuts computed in `forward`, functional ops (`F.relu`), no BatchNorm,
softmax in `forward`. Widths are narrow and inputs small so the tests stay quick.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_edu import models
from resnet_edu.diagnostics import diagnose, residual_blocks
from resnet_edu.residual_trace import residual_additions

SMALL = (3, 32, 32)


# ------------------------------------------------- a ResNet-34 as a blog post writes it


class BlogBlock(nn.Module):
    """conv1/conv2 on the branch, conv3 the projection; no BatchNorm; shortcut in forward."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.conv3 = None
        if stride != 1 or in_channels != out_channels:
            self.conv3 = nn.Conv2d(in_channels, out_channels, 1, stride)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = self.conv2(y)
        if self.conv3:
            x = self.conv3(x)
        return F.relu(y + x)


class BlogResNet34(nn.Module):
    """[3, 4, 6, 3] blocks; ends in a softmax (and is trained with CrossEntropyLoss)."""

    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, 1, 1)
        blocks, cin = [], width
        for i, n in enumerate([3, 4, 6, 3]):
            cout = width * 2**i
            for j in range(n):
                blocks.append(BlogBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.blocks(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.softmax(self.fc(x), dim=1)


# ---------------------------------- the "left/right" style, a ReLU on the shortcut in forward


class LeftRightBlock(nn.Module):
    def __init__(self, inchannel, outchannel, stride=1, shortcut=None):
        super().__init__()
        self.left = nn.Sequential(
            nn.Conv2d(inchannel, outchannel, 3, stride, 1, bias=False),
            nn.BatchNorm2d(outchannel),
            nn.ReLU(inplace=True),
            nn.Conv2d(outchannel, outchannel, 3, 1, 1, bias=False),
            nn.BatchNorm2d(outchannel))
        self.right = shortcut

    def forward(self, x):
        out = self.left(x)
        residual = x if self.right is None else F.relu(self.right(x))
        out += residual
        return F.relu(out)


class LeftRightResNet(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                 nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = self._make_layer(width, width, 2)
        self.layer2 = self._make_layer(width, 2 * width, 2, stride=2)
        self.fc = nn.Linear(2 * width, num_classes)

    def _make_layer(self, inchannel, outchannel, n, stride=1):
        shortcut = None
        if stride != 1 or inchannel != outchannel:
            shortcut = nn.Sequential(nn.Conv2d(inchannel, outchannel, 1, stride, bias=False),
                                     nn.BatchNorm2d(outchannel))
        layers = [LeftRightBlock(inchannel, outchannel, stride, shortcut)]
        layers += [LeftRightBlock(outchannel, outchannel) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.layer2(self.layer1(self.pre(x)))
        return self.fc(F.avg_pool2d(x, x.shape[-1]).view(x.size(0), -1))


# ----------------------------------------------------- kuangliu's CIFAR ResNet18, narrowed


class KuangliuBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, 1, stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class KuangliuResNet18(nn.Module):
    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, 2, 1)
        self.layer2 = self._make_layer(2 * width, 2, 2)
        self.layer3 = self._make_layer(4 * width, 2, 2)
        self.layer4 = self._make_layer(8 * width, 2, 2)
        self.linear = nn.Linear(8 * width, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(KuangliuBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ------------------------------------- a timm-style pre-activation net (norm + act in one)


class BatchNormAct2d(nn.BatchNorm2d):
    def forward(self, x):
        return F.relu(super().forward(x))


class PreActBasic(nn.Module):
    """The projection reads the pre-activated x and has no norm of its own, as in timm."""

    def __init__(self, in_chs, out_chs, stride=1):
        super().__init__()
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.norm2 = BatchNormAct2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.downsample = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)
        self.drop_path = nn.Identity()

    def forward(self, x):
        x_preact = self.norm1(x)
        shortcut = x
        if self.downsample is not None:
            shortcut = self.downsample(x_preact)
        x = self.conv1(x_preact)
        x = self.conv2(self.norm2(x))
        x = self.drop_path(x)
        return x + shortcut


class TimmStylePreActNet(nn.Module):
    def __init__(self, width=8, depth=2, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        stages, cin = [], width
        for i in range(3):
            cout = width * 2**i
            stages += [PreActBasic(cin if j == 0 else cout, cout, 2 if i and not j else 1)
                       for j in range(depth)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.norm = BatchNormAct2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.norm(self.stages(self.stem(x)))
        return self.head(x.mean((2, 3)))


# --------------------------------------------------------------------------- the tests


def test_blog_resnet34_blocks_are_found_and_missing_norm_and_softmax_reported():
    model = BlogResNet34()
    report = diagnose(model, SMALL)
    assert [b.name for b in report.blocks] == [f"blocks.{i}" for i in range(16)]
    assert report.checks == ("no-normalization", "softmax-output"), str(report)
    finding = report.findings[0]
    n_layers = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert finding.where == "the whole model"
    assert finding.what.startswith(f"{n_layers} conv/linear layers")
    # the projections are found as shortcuts with weights, computed in forward
    projecting = [b.name for b in report.blocks if b.shortcut_has_weights]
    assert projecting == ["blocks.3", "blocks.7", "blocks.13"]
    assert not report.skipped


def test_left_right_style_relu_on_the_shortcut_is_found():
    model = LeftRightResNet()
    report = diagnose(model, SMALL)
    assert [b.name for b in report.blocks] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert report.checks == ("shortcut-activation",), str(report)
    (finding,) = report.findings
    assert finding.where == "layer2.0" and "relu()" in finding.what
    # the same net with the ReLU taken off the shortcut is clean
    LeftRightBlock.forward, saved = _no_shortcut_relu, LeftRightBlock.forward
    try:
        assert diagnose(model, SMALL).findings == ()
    finally:
        LeftRightBlock.forward = saved


def _no_shortcut_relu(self, x):
    out = self.left(x)
    out += x if self.right is None else self.right(x)
    return F.relu(out)


@pytest.mark.parametrize("make, n_blocks", [
    (KuangliuResNet18, 8),
    (TimmStylePreActNet, 6),
    (lambda: TimmStylePreActNet(depth=1), 3),
], ids=["kuangliu_resnet18", "timm_preact", "timm_preact_1"])
def test_correct_nets_in_other_styles_have_no_findings(make, n_blocks):
    report = diagnose(make(), SMALL)
    assert report.findings == (), str(report)
    assert len(report.blocks) == n_blocks
    assert f"{n_blocks} residual blocks, no findings" in str(report)


def test_timm_style_projection_reads_the_preactivated_input():
    model = TimmStylePreActNet().eval()
    adds = residual_additions(model, torch.randn(2, *SMALL))
    first_projection = next(a for a in adds if a.shortcut)
    # the fork is x_preact, so the BN + ReLU before it belong to both paths, not the shortcut
    assert [s.op for s in first_projection.shortcut] == ["conv2d"]
    assert first_projection.shortcut_module == "stages.2.downsample"
    assert not first_projection.fork_is_block_input
    assert [a.identity for a in adds] == [True, True, False, True, False, True]


class ReluLastBlock(KuangliuBasicBlock):
    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))  # the ReLU moved before the addition
        return out + self.shortcut(x)


class UnnormalizedProjectionBlock(KuangliuBasicBlock):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__(in_planes, planes, stride)
        if len(self.shortcut):
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)


def _kuangliu_with(block):
    model = KuangliuResNet18()
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for i, old in enumerate(getattr(model, name)):
            new = block(old.conv1.in_channels, old.conv1.out_channels, old.conv1.stride[0])
            getattr(model, name)[i] = new
    return model


def test_branch_ending_in_activation_is_found():
    report = diagnose(_kuangliu_with(ReluLastBlock), SMALL)
    assert report.checks == ("branch-ends-in-activation",), str(report)
    assert report.findings[0].where.split(", ") == [b.name for b in report.blocks]
    assert "relu()" in report.findings[0].what
    # the oracle: what the branch returns is never negative, so the sum only grows
    block = ReluLastBlock(8, 8).train()
    x = torch.randn(2, 8, 8, 8)
    assert (block(x) - x >= 0).all()


def test_projection_without_normalization_is_found_where_the_branch_has_it():
    report = diagnose(_kuangliu_with(UnnormalizedProjectionBlock), SMALL)
    assert report.checks == ("no-normalization",), str(report)
    assert report.findings[0].where == "layer2.0, layer3.0, layer4.0"


def test_a_whole_net_in_one_forward_names_each_addition():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1, bias=False)
                                       for _ in range(3))
            self.bns = nn.ModuleList(nn.BatchNorm2d(8) for _ in range(4))
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = torch.relu(self.bns[0](self.stem(x)))
            for conv, bn in zip(self.convs, self.bns[1:], strict=True):
                x = torch.add(x, bn(conv(x))).relu()
            return self.fc(x.mean((2, 3)))

    report = diagnose(Flat(), SMALL)
    assert [b.name for b in report.blocks] == ["(model) add 1", "(model) add 2",
                                               "(model) add 3"]
    assert report.findings == () and len(report.gradients) == 3
    assert residual_blocks(Flat()) == []  # no module smaller than the model holds them


class ThroughNumpy(KuangliuResNet18):
    def forward(self, x):
        x = torch.from_numpy(x.detach().cpu().numpy())  # leaves torch and comes back
        return super().forward(x)


def _scripted():
    with warnings.catch_warnings():
        # torch.jit.script is deprecated (a FutureWarning in torch 2.14, a DeprecationWarning
        # in 2.11): this test uses it on purpose, as foreign code the tracer cannot see into
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(KuangliuResNet18())


@pytest.mark.parametrize("make", [ThroughNumpy, _scripted], ids=["numpy", "torchscript"])
def test_a_model_the_tracer_cannot_see_into_is_reported_as_such(make):
    model = make()
    report = diagnose(model, SMALL)
    assert report.blocks == () and report.findings == ()
    assert any("could not be traced" in s for s in report.skipped), str(report)
    assert "could not be traced" in str(report)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_our_models_agree_with_the_traced_definition():
    for model, n in ((models.resnet18(), 8), (models.cifar_resnet(20), 9)):
        found = residual_blocks(model, (3, 64, 64))
        assert [name for name, _ in found] == [
            name for name, m in model.named_modules() if getattr(m, "residual", False)]
        assert len(found) == n
    # plain twins add nothing, so they are not residual blocks
    assert residual_blocks(models.cifar_resnet(20, residual=False)) == []


# ------------------ pre-activation projections: BN-ReLU before the 1x1 conv is not a finding
# He et al. 2016, appendix: "these projection shortcuts are also with pre-activation". The
# BN-ReLU may be shared with the branch (the fork is then relu(bn(x))) or the shortcut's own.


class KuangliuPreActBlock(nn.Module):
    """The shortcut takes out = relu(bn1(x)), shared with the branch."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out += shortcut
        return out


class OwnPreActShortcutBlock(nn.Module):
    """The shortcut has its own nn.Sequential(BN, ReLU, Conv1x1), applied to x."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_planes), nn.ReLU(),
            nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes), nn.ReLU(), nn.Conv2d(planes, planes, 3, 1, 1, bias=False))
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True),
                                          nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class ReluAfterPreActProjectionBlock(OwnPreActShortcutBlock):
    """The same, with a ReLU after the projection's conv as well: that one is a finding."""

    def forward(self, x):
        if isinstance(self.shortcut, nn.Identity):
            return self.branch(x) + x
        return self.branch(x) + F.relu(self.shortcut(x))


class PreActNet(nn.Module):
    def __init__(self, block, width=8, depth=2, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        blocks, cin = [], width
        for i in range(3):
            cout = width * 2**i
            for j in range(depth):
                blocks.append(block(cin, cout, 2 if i and not j else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("make, preactivated", [
    (lambda: models.cifar_resnet(20, preact=True, shortcut="B"), ()),
    (lambda: PreActNet(KuangliuPreActBlock), ()),  # shared: before the fork, not on it
    (lambda: PreActNet(OwnPreActShortcutBlock), ("ReLU",)),
], ids=["ours_preact_B", "kuangliu_shared_bn_relu", "own_bn_relu_conv"])
def test_pre_activation_projections_are_not_shortcut_activations(make, preactivated):
    report = diagnose(make(), SMALL)
    assert report.findings == (), str(report)
    projecting = [b for b in report.blocks if b.shortcut_has_weights]
    assert len(projecting) == 2
    assert all(b.shortcut_activations == () for b in projecting)
    assert all(b.shortcut_preactivation == preactivated for b in projecting)


def test_an_activation_after_a_pre_activated_projection_is_still_found():
    report = diagnose(PreActNet(ReluAfterPreActProjectionBlock), SMALL)
    assert report.checks == ("shortcut-activation",), str(report)
    assert report.findings[0].where == "layers.2, layers.4"
    assert "relu()" in report.findings[0].what and "ReLU" not in report.findings[0].what
    assert "12.22 %" in report.findings[0].why  # Identity Mappings, Table 1
