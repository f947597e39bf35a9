"""The notebook 03 checks: right answers pass, typical wrong ones get the matching hint,
and the notebook's own solution blocks pass when run alone."""

from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_edu.exercises import Feedback
from resnet_edu.exercises.shapes import (
    check_conv_output_size,
    check_shortcut,
    check_unpadded_block,
)
from resnet_edu.shortcuts import make_downsample

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny convs


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_shapes_and_shortcuts.ipynb"


def _formula(size, kernel, stride, padding, dilation=1):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def test_conv_output_size_check():
    assert check_conv_output_size(_formula)
    assert check_conv_output_size(lambda h, k, s, p, d=1: torch.nn.functional.conv2d(
        torch.zeros(1, 1, h, 1), torch.zeros(1, 1, k, 1), stride=(s, 1), padding=(p, 0),
        dilation=(d, 1)).shape[2])
    wrong = {
        "floor division": lambda h, k, s, p, d=1: (h + 2 * p - d * (k - 1) - 1) / s + 1,
        "dilated": lambda h, k, s, p, d=1: (h + 2 * p - k) // s + 1,
        "never grows": lambda h, k, s, p, d=1: 2 * h + 2 * p + 1,
        "window positions": lambda h, k, s, p, d=1: (h - d * (k - 1) - 1) // s + 1,
        "not attempted": lambda h, k, s, p, d=1: None,
    }
    for hint, fn in wrong.items():
        feedback = check_conv_output_size(fn)
        assert isinstance(feedback, Feedback) and not feedback, hint
        assert hint in feedback.message, (hint, feedback.message)


def test_conv_output_size_check_accepts_any_integer_type():
    """numpy ints and 0-d integer tensors are ints; a 0-d float tensor is a float."""
    import numpy as np

    assert check_conv_output_size(lambda h, k, s, p, d=1: np.int64(_formula(h, k, s, p, d)))
    assert check_conv_output_size(lambda h, k, s, p, d=1: torch.tensor(_formula(h, k, s, p, d)))
    feedback = check_conv_output_size(
        lambda h, k, s, p, d=1: torch.tensor(float(_formula(h, k, s, p, d))))
    assert not feedback and "a float" in feedback.message, feedback.message


def test_conv_output_size_check_asks_for_the_dilation_parameter():
    feedback = check_conv_output_size(lambda h, k, s, p: (h + 2 * p - k) // s + 1)
    assert not feedback and "dilation=1" in feedback.message, feedback.message
    assert "TypeError" not in feedback.message


def test_unpadded_block_check():
    assert check_unpadded_block((8, 128, 5, 5), (8, 128, 8, 8))
    assert check_unpadded_block(torch.Size([8, 128, 5, 5]), [8, 128, 8, 8])
    right_s = (8, 128, 8, 8)
    wrong = {
        ((8, 128, 8, 8), right_s): "padding=1 gives",  # the padded block's answer
        ((8, 128, 7, 7), right_s): "conv2 (3x3, stride 1, padding 0) shrinks it",
        ((8, 128, 6, 6), right_s): "once per conv",
        ((8, 128, 5, 5), (8, 128, 5, 5)): "does not copy the main path's padding",
        ((8, 128, 5, 5), (8, 128, 7, 7)): "rounds up",
        ((8, 128, 5, 5), (8, 128, 6, 6)): "1x1 conv with stride 2, padding 0",
        ((8, 128, 30, 30), right_s): "does not grow it",
        ((1, 128, 5, 5), right_s): "batch",
        ((8, 64, 5, 5), right_s): "C=64",
        ((8, 128, 5, 5), (8, 64, 8, 8)): "the shortcut: C=64",
        ((8, 128, 5), right_s): "4 numbers",
        ("abc", right_s): "4 ints",
        (..., right_s): "not attempted",
        ((8, 128, 5, 5), ...): "not attempted",
    }
    for (f_shape, s_shape), hint in wrong.items():
        feedback = check_unpadded_block(f_shape, s_shape)
        assert not feedback and hint in feedback.message, (f_shape, s_shape, feedback.message)


def _option_b(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return make_downsample(cin, cout, stride, "B")


def test_shortcut_check_accepts_option_b_only():
    assert check_shortcut(_option_b)
    assert check_shortcut(lambda i, o, s: make_downsample(i, o, s, "B") or nn.Identity())
    rejected = {"A": "option A", "C": "option C", "D": "ResNet-D"}
    for option, hint in rejected.items():
        feedback = check_shortcut(lambda i, o, s, option=option: make_downsample(i, o, s, option))
        assert not feedback and hint in feedback.message, (option, feedback.message)


def _projection(*layers):
    """A shortcut that is `layers(i, o, s)` where the shapes differ, the identity elsewhere."""
    return lambda i, o, s: (None if (i, s) == (o, 1)
                            else nn.Sequential(*(make(i, o, s) for make in layers)))


def test_shortcut_check_explains_what_is_wrong():
    def constant(i, o, s):
        if (i, s) == (o, 1):
            return None
        conv = nn.Conv2d(i, o, 1, stride=s, bias=False)
        nn.init.zeros_(conv.weight)  # right shape, but x never gets through
        return nn.Sequential(conv, nn.BatchNorm2d(o))

    def not_a_module(i, o, s):
        return lambda x: x

    def unattempted(i, o, s):
        raise NotImplementedError

    conv = lambda i, o, s: nn.Conv2d(i, o, 1, stride=s, bias=False)  # noqa: E731
    bn = lambda i, o, s: nn.BatchNorm2d(o)  # noqa: E731
    cases = {
        _projection(lambda i, o, s: nn.Conv2d(i, o, 1, bias=False), bn):
            "give the 1x1 conv the block's stride",
        _projection(lambda i, o, s: nn.Conv2d(i, o, 1, stride=s, padding=1, bias=False), bn):
            "the stride is right, but padding=1",
        _projection(lambda i, o, s: nn.Conv2d(i, i, 1, stride=s, bias=False),
                    lambda i, o, s: nn.BatchNorm2d(i)): "out_channels=",
        (lambda i, o, s: None): "needs a projection",
        (lambda i, o, s: nn.Identity()): "needs a projection",
        _projection(conv): "no BatchNorm",
        _projection(conv, bn, lambda i, o, s: nn.ReLU()): "must stay linear",
        _projection(lambda i, o, s: nn.Conv2d(i, o, 1, stride=s), bn): "bias=False",
        _projection(lambda i, o, s: nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), bn):
            "kernel_size=1",
        _projection(lambda i, o, s: nn.BatchNorm2d(i), conv): "before the conv",
        (lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 1, stride=s, bias=False),
                                       nn.BatchNorm2d(o))): "return None",
        constant: "does not depend on x",
        not_a_module: "return an nn.Module",
        unattempted: "not attempted",
    }
    for fn, hint in cases.items():
        feedback = check_shortcut(fn)
        assert not feedback and hint in feedback.message, (hint, feedback.message)


def test_one_shortcut_rule_for_notebooks_03_and_05():
    """nb03's check_shortcut and nb05's check_shortcut_for judge with the same function."""
    from resnet_edu.exercises.bug_hunt import check_shortcut_for

    no_bn = _projection(lambda i, o, s: nn.Conv2d(i, o, 1, stride=s, bias=False))
    for check in (check_shortcut, check_shortcut_for):
        assert check(_option_b)
        feedback = check(no_bn)
        assert not feedback and "no BatchNorm" in feedback.message


def test_resnet18_sizes_prediction():
    from resnet_edu.exercises.shapes import check_resnet18_sizes, resnet18_sizes

    assert resnet18_sizes(224) == {"conv1": 112, "maxpool": 56, "layer1": 56, "layer2": 28,
                                   "layer3": 14, "layer4": 7}
    assert check_resnet18_sizes((114, 57, 57, 29, 15, 8))
    wrong = {
        (113, 56, 56, 28, 14, 7): "after conv1 the map is 114x114",  # 227 // 2 all the way
        (114, 57, 57, 28, 14, 7): "rounds up, ceil(H/2)",  # floor at the stride-2 stages
        (114, 56, 56, 28, 14, 7): "after maxpool",
        (114, 57, 29, 15, 8, 4): "after layer1",  # layer1 does not downsample
        (114, 57, 57, 29, 15): "give 6 sizes",
        "abc": "give 6 ints",
        ...: "first",
    }
    for answer, hint in wrong.items():
        feedback = check_resnet18_sizes(answer)
        assert not feedback and hint in feedback.message, (answer, feedback.message)
