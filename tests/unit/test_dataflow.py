"""The data-flow tracer: every torch op a forward pass runs from the input, linked to the ops
its inputs came from, inside the module calls that ran it; hooks removed afterwards."""

import torch
import torch.nn.functional as F
from torch import nn

from resnet_edu.dataflow import ACTIVATION, NORM, WEIGHT, tracing


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        return out + out.mean()  # an op on a value derived from the input


def test_ops_are_recorded_in_order_with_their_kinds_and_links():
    model, x = Tiny().eval(), torch.randn(2, 3, 8, 8)
    with tracing(model, x) as traced:
        y = model(x)
    kinds = [n.kind for n in traced.nodes]
    assert WEIGHT in kinds and NORM in kinds and ACTIVATION in kinds
    assert kinds.index(WEIGHT) < kinds.index(NORM) < kinds.index(ACTIVATION)  # call order
    conv = kinds.index(WEIGHT)
    assert traced.nodes[conv].params and traced.nodes[conv].shape == (2, 4, 8, 8)
    for i, node in enumerate(traced.nodes):  # every op's inputs were recorded before it
        assert all(j < i for j in node.inputs)
    assert traced.connected and torch.equal(traced.tensor(traced.output_node), y)
    assert [c.name for c in traced.calls] == ["", "conv", "bn"]  # the model, then its parts
    assert traced.calls[1].parent == 0 and traced.calls[1].input_shape == (2, 3, 8, 8)


def test_data_that_leaves_torch_is_not_connected_and_the_hooks_go():
    class Detour(nn.Module):
        def forward(self, x):
            return torch.tensor(x.tolist())  # through Python lists: the tracer loses it

    model = nn.Sequential(Detour())
    with tracing(model, torch.randn(2, 3)) as traced:
        model(torch.randn(2, 3))
    assert not traced.connected
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
