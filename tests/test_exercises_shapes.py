"""The notebook 03 checks: right answers pass, typical wrong ones get the matching hint,
and the notebook's own solution blocks pass when run alone."""

from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_edu.exercises import Feedback
from resnet_edu.exercises.shapes import (
    check_block_output_shape,
    check_conv_output_size,
    check_shortcut,
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


def test_block_output_shape_check():
    assert check_block_output_shape((8, 128, 8, 8))
    assert check_block_output_shape(torch.Size([8, 128, 8, 8]))
    wrong = {
        (8, 128, 7, 7): "floor((15",
        (8, 128, 30, 30): "does not double",
        (1, 128, 8, 8): "batch",
        (8, 64, 8, 8): "C=64",
        (8, 128, 8): "4 numbers",
        "abc": "4 ints",
        ...: "not attempted",
    }
    for answer, hint in wrong.items():
        feedback = check_block_output_shape(answer)
        assert not feedback and hint in feedback.message, (answer, feedback.message)


def _option_b(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return make_downsample(cin, cout, stride, "B")


def test_shortcut_check_accepts_every_working_option():
    assert check_shortcut(_option_b)
    for option in "AD":
        assert check_shortcut(lambda i, o, s, option=option: make_downsample(i, o, s, option))
    with_c = check_shortcut(lambda i, o, s: make_downsample(i, o, s, "C"))
    assert with_c and "option C" in with_c.message


def test_shortcut_check_explains_what_is_wrong():
    def no_stride(i, o, s):
        return nn.Conv2d(i, o, 1, bias=False)

    def constant(i, o, s):
        conv = nn.Conv2d(i, o, 1, stride=s)
        nn.init.zeros_(conv.weight)  # right shape, but x never gets through
        return conv

    def not_a_module(i, o, s):
        return lambda x: x

    def unattempted(i, o, s):
        raise NotImplementedError

    cases = {
        no_stride: "give the 1x1 conv the block's stride",
        (lambda i, o, s: None): "a 1x1 conv changes them",
        constant: "does not depend on x",
        not_a_module: "return an nn.Module",
        unattempted: "not attempted",
    }
    for fn, hint in cases.items():
        feedback = check_shortcut(fn)
        assert not feedback and hint in feedback.message, (hint, feedback.message)
