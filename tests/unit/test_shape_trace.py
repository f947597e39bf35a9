"""trace_shapes against hand runs and torchvision: every module's shapes in execution order,
each residual block's main path and shortcut, the cost of a pass."""


from __future__ import annotations

import matplotlib
import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from resnet_edu import models
from resnet_edu.blocks import BasicBlock
from resnet_edu.shape_trace import shortcut_kind, trace_shapes
from resnet_edu.shortcuts import make_downsample

from helpers import Adds, Branch

matplotlib.use("Agg")


def _rerun_rows(model: nn.Module, trace) -> None:
    """Each leaf module, run alone on the recorded input shape, gives the recorded output;
    each block's own paths give the recorded main and shortcut shapes."""
    modules = dict(model.named_modules())
    model.eval()
    with torch.no_grad():
        for row in trace.rows:
            m = modules[row.name]
            if row.is_block:
                x = torch.zeros(row.input_shape)
                short = x if m.downsample is None else m.downsample(x)
                assert tuple(short.shape) == row.shortcut_shape, row.name
                assert tuple(m(x).shape) == row.output_shape == row.main_shape, row.name
                assert row.projection == (m.downsample is not None
                                          and len(list(m.downsample.parameters())) > 0)
            elif not list(m.children()) and row.input_shape is not None:
                assert tuple(m(torch.zeros(row.input_shape)).shape) == row.output_shape, row.name


def test_trace_of_torchvision_resnet18_matches_a_hand_run():
    model = tvm.resnet18().eval()
    trace = trace_shapes(model, (1, 3, 224, 224))
    _rerun_rows(model, trace)
    with torch.no_grad():  # torchvision's forward, by hand, block by block
        x = model.maxpool(model.relu(model.bn1(model.conv1(torch.zeros(1, 3, 224, 224)))))
        assert trace["maxpool"].output_shape == tuple(x.shape)
        for name, block in model.named_modules():
            if not isinstance(block, tvm.resnet.BasicBlock):
                continue
            main = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
            short = x if block.downsample is None else block.downsample(x)
            row = trace[name]
            assert (row.input_shape, row.main_shape, row.shortcut_shape) == (
                tuple(x.shape), tuple(main.shape), tuple(short.shape))
            x = block(x)
    strided = [n for n, m in model.named_modules()
               if isinstance(m, tvm.resnet.BasicBlock) and m.conv1.stride == (2, 2)]
    assert [r.name for r in trace.blocks() if r.downsamples] == strided
    assert [r.name for r in trace.blocks() if r.projection] == strided  # option B


def test_trace_of_ours_equals_torchvision_row_for_row():
    ours = trace_shapes(models.resnet18(), (1, 3, 64, 64))
    theirs = trace_shapes(tvm.resnet18(), (1, 3, 64, 64))
    assert ours.table() == theirs.table()
    assert [r.name for r in ours.blocks()] == [r.name for r in theirs.blocks()]


def test_execution_order_and_the_post_addition_relu():
    block = BasicBlock(16, 32, 2)
    trace = trace_shapes(nn.Sequential(block), (1, 16, 9, 9))
    names = [r.name for r in trace.rows]
    # torchvision vocabulary, in the order the forward runs them: F(x), then W_s x, then ReLU
    assert names == ["", "0", "0.conv1", "0.bn1", "0.relu", "0.conv2", "0.bn2",
                     "0.downsample", "0.downsample.0", "0.downsample.1", "0.relu"]
    assert trace["0"].main_shape == (1, 32, 5, 5) == trace["0"].shortcut_shape


MODELS = {
    "resnet18": lambda: models.resnet18(width=8),
    "resnet34": lambda: models.resnet34(width=8),
    "resnet50": lambda: models.resnet50(width=8),
    "resnet101": lambda: models.resnet101(width=8),
    "resnet152": lambda: models.resnet152(width=8),
    "resnet18_cifar": lambda: models.resnet18_cifar(width=8),
    "resnet34_A": lambda: models.resnet34(width=8, shortcut="A"),
    "resnet34_C": lambda: models.resnet34(width=8, shortcut="C"),
    "cifar20": lambda: models.cifar_resnet(20),
    "cifar20_B": lambda: models.cifar_resnet(20, shortcut="B"),
    "cifar20_D_preact": lambda: models.cifar_resnet(20, shortcut="D", preact=True),
    "cifar20_plain": lambda: models.cifar_resnet(20, residual=False),
}


@pytest.mark.parametrize("name", MODELS)
def test_trace_on_every_resnet_edu_model(name):
    model = MODELS[name]().train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    trace = trace_shapes(model, (2, 3, 33, 33))  # odd: every stride rounds
    assert model.training and torch.equal(bn.running_mean, before)  # untouched
    _rerun_rows(model, trace)
    assert trace.rows[0].output_shape == (2, model.num_classes)
    blocks = [m for m in model.modules() if hasattr(m, "downsample")]
    if name.endswith("plain"):
        assert trace.blocks() == []  # plain twins have no shortcut to report
    else:
        assert len(trace.blocks()) == len(blocks)
    kinds = {r.shortcut.split(":")[0] for r in trace.blocks() if r.projection is not None}
    if "_C" in name:
        assert all(r.projection for r in trace.blocks())
    if name in ("cifar20", "resnet34_A"):
        assert kinds == {"identity", "A"}
    if "_D" in name:
        assert kinds == {"identity", "D"}
    for line in trace.table().splitlines()[2:]:  # marked exactly where H shrinks
        assert ("<- /" in line) == trace[line.split()[0]].downsamples, line


def test_table_depths_and_bad_input():
    trace = trace_shapes(models.cifar_resnet(8), (1, 3, 32, 32))
    top = [line.split()[0] for line in trace.table(max_depth=1).splitlines()[2:]]
    # CifarResNet.forward's order (final_norm only runs in the pre-activation net)
    assert top == ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "avgpool", "fc"]
    full = trace.table(collapse_blocks=False)
    assert "layer2.0.downsample" in full and "layer2.0.downsample" not in trace.table()
    with pytest.raises(KeyError, match="no module called"):
        trace["layer9"]
    for bad in [(3, 32, 32), (1, 3, 0, 32), (1, 3, 32.0, 32)]:
        with pytest.raises(ValueError, match="input_shape"):
            trace_shapes(models.cifar_resnet(8), bad)


def test_shortcut_kind_names_each_option():
    assert shortcut_kind(None) == "identity"
    assert shortcut_kind(make_downsample(16, 32, 2, "A")).startswith("A:")
    assert shortcut_kind(make_downsample(16, 32, 2, "B")) == "1x1 conv /2 + BN"
    assert shortcut_kind(make_downsample(16, 32, 2, "D")).startswith("D: avg-pool /2")
    assert shortcut_kind(nn.Conv2d(16, 32, 1, stride=2)) == "1x1 conv /2"


def test_trace_shapes_marks_blocks_written_in_any_style():
    class LeftRight(nn.Module):
        def __init__(self):
            super().__init__()
            self.left = Branch()
            self.right = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))

        def forward(self, x):
            return F.relu(self.left(x) + F.relu(self.right(x)))

    trace = trace_shapes(nn.Sequential(LeftRight(), Adds(lambda s, x: s.f(x) + x)),
                         (2, 4, 8, 8))
    assert [r.name for r in trace.blocks()] == ["0", "1"]
    first, second = trace.blocks()
    assert first.shortcut == "in forward: conv2d, batch_norm, relu" and first.projection
    assert second.shortcut == "identity" and not second.projection
    assert first.main_shape == first.shortcut_shape == (2, 4, 8, 8)
