"""resnet_edu.modes: every module's own train/eval flag comes back, even after an error, and
the functions that switch to eval mode use it."""

import pytest
import torch

from resnet_edu.data import load_sample
from resnet_edu.evaluation import evaluate, predict
from resnet_edu.models import cifar_resnet
from resnet_edu.modes import mode


def mixed() -> torch.nn.Module:
    """A training net whose first BatchNorm is frozen in eval mode: a mix of modes."""
    torch.manual_seed(0)
    net = cifar_resnet(depth=8).train()
    net.bn1.eval()
    return net


def flags(net: torch.nn.Module) -> list[bool]:
    return [m.training for m in net.modules()]


def test_mode_switches_every_module_and_restores_each_ones_own_flag():
    net = mixed()
    before = flags(net)
    assert not all(before) and any(before)
    with mode(net, train=False) as inside:
        assert inside is net and not any(flags(net))
    assert flags(net) == before  # net.train(True) would have set bn1 training again
    seen = []

    def fails_inside() -> None:
        with mode(net, train=True):
            seen.append(all(flags(net)))
            raise RuntimeError("an error inside")

    with pytest.raises(RuntimeError, match="inside"):
        fails_inside()
    assert seen == [True] and flags(net) == before
    with pytest.raises(TypeError, match="True or False, got 'eval'"), mode(net, "eval"):
        pass


def test_evaluate_and_predict_leave_a_mix_of_modes_as_it_was():
    net = mixed()
    before = flags(net)
    images = load_sample().test.subset(slice(0, 16))
    evaluate(net, images)
    predict(net, images)
    assert flags(net) == before
