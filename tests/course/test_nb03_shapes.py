"""The notebook 03 checks: right answers pass, typical wrong ones get the matching hint,
and the notebook's own solution blocks pass when run alone."""

from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_edu.course.exercise import Feedback
from resnet_edu.course.nb03_shapes import (
    check_conv_output_size,
    check_shortcut,
    check_unpadded_block,
)
from resnet_edu.shortcuts import make_downsample

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny convs


NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_shapes_and_shortcuts.ipynb"


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
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(cout))


class _ZeroChannels(nn.Module):
    """Option A written as a student would: every s-th pixel, then zero channels, placed
    `before` x's channels and the rest after (0: at the end; half: symmetric, as in popular
    CIFAR code)."""

    def __init__(self, cin, cout, stride, before=lambda extra: 0):
        super().__init__()
        self.cin, self.cout, self.stride, self.before = cin, cout, stride, before

    def forward(self, x):
        extra = self.cout - self.cin
        front = self.before(extra)
        return nn.functional.pad(x[:, :, ::self.stride, ::self.stride],
                                 (0, 0, 0, 0, front, extra - front))


def _option_a(before=lambda extra: 0, cls=_ZeroChannels):
    return lambda i, o, s: None if (i, s) == (o, 1) else cls(i, o, s, before)


def test_shortcut_check_accepts_options_a_and_b_and_names_the_cost():
    option_b = check_shortcut(_option_b)
    assert option_b and "option B" in option_b.message and "27,008 parameters" in option_b.message
    assert "option A: 0" in option_b.message
    end = check_shortcut(_option_a())
    assert end and "option A" in end.message and "0 parameters" in end.message
    assert "(at the end)" in end.message and "27,008" in end.message  # what B would cost
    symmetric = check_shortcut(_option_a(lambda extra: extra // 2))
    assert symmetric and "(on both sides)" in symmetric.message
    # the identity may be returned as nn.Identity() or, for option A, the module itself
    assert check_shortcut(lambda i, o, s: _option_b(i, o, s) or nn.Identity())
    assert check_shortcut(lambda i, o, s: _ZeroChannels(i, o, s))
    # option A from torch.nn layers alone: a 1x1 pool subsamples, ZeroPad3d pads dimension 1
    assert check_shortcut(lambda i, o, s: None if (i, s) == (o, 1) else nn.Sequential(
        nn.MaxPool2d(1, s), nn.ZeroPad3d((0, 0, 0, 0, 0, o - i))))
    # both options in one rule: correct, and the message says so
    mixed = check_shortcut(lambda i, o, s: _option_b(i, o, s) if s == 1 else
                           _option_a()(i, o, s))
    assert mixed and "option A on 3 and option B on 1" in mixed.message


def test_shortcut_check_refuses_the_librarys_own_shortcut():
    from resnet_edu import shortcuts
    from resnet_edu.blocks import BasicBlock
    from resnet_edu.shortcuts import ZeroPadShortcut

    wrappers = {
        "make_downsample": lambda i, o, s: make_downsample(i, o, s, "B"),
        "shortcuts.make_downsample": lambda i, o, s: shortcuts.make_downsample(i, o, s, "A"),
        "ZeroPadShortcut": lambda i, o, s: None if (i, s) == (o, 1) else ZeroPadShortcut(i, o, s),
        "BasicBlock": lambda i, o, s: BasicBlock(i, o, s).downsample,
    }
    for name, fn in wrappers.items():
        feedback = check_shortcut(fn)
        assert not feedback and "ready-made shortcut" in feedback.message, (name, feedback)

    class Mine(ZeroPadShortcut):  # a subclass reached without naming the library
        pass

    made = {(i, o, s): Mine(i, o, s) for i, o, s in ((64, 128, 2), (16, 32, 2), (32, 32, 2),
                                                      (64, 256, 1))}
    feedback = check_shortcut(lambda i, o, s: made.get((i, o, s)))
    assert not feedback and "library's own ZeroPadShortcut" in feedback.message


class _PadW(_ZeroChannels):
    def forward(self, x):  # F.pad's first pair is W, not C
        return nn.functional.pad(x[:, :, ::self.stride, ::self.stride], (0, self.cout - self.cin))


class _OddRows(_ZeroChannels):
    def forward(self, x):
        return nn.functional.pad(x[:, :, 1::self.stride, 1::self.stride],
                                 (0, 0, 0, 0, 0, self.cout - self.cin))


class _Copies(_ZeroChannels):
    def forward(self, x):
        sub = x[:, :, ::self.stride, ::self.stride]
        return torch.cat([sub, sub[:, : self.cout - self.cin]], dim=1)


class _Averaged(_ZeroChannels):
    def forward(self, x):
        pooled = nn.functional.avg_pool2d(x, self.stride, ceil_mode=True)
        return nn.functional.pad(pooled, (0, 0, 0, 0, 0, self.cout - self.cin))


class _NoSubsample(_ZeroChannels):
    def forward(self, x):
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))


class _NoZeros(_ZeroChannels):
    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride]


class _Halved(_ZeroChannels):
    def forward(self, x):
        return 0.5 * super().forward(x)


class _AlwaysTwo(_ZeroChannels):
    def forward(self, x):  # stride 2 hard-coded, also where the block has stride 1
        return nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.cout - self.cin))


def test_shortcut_check_explains_a_wrong_option_a():
    cases = {
        _PadW: "F.pad's pairs start from the last dimension",
        _OddRows: "centred on rows and columns 0, 2, 4",
        _Copies: "extra channels are not zero",
        _Averaged: "does not average",
        _NoSubsample: "subsample it with the block's stride",
        _NoZeros: "add the missing ones",
        _Halved: "multiplies x by 0.5",
        _AlwaysTwo: "subsample with the block's stride, 1",
    }
    for cls, hint in cases.items():
        feedback = check_shortcut(_option_a(cls=cls))
        assert not feedback and hint in feedback.message, (cls.__name__, feedback.message)
        assert "Error" not in feedback.message, feedback.message


def _projection(*layers):
    """A shortcut that is `layers(i, o, s)` where the shapes differ, the identity elsewhere."""
    return lambda i, o, s: (None if (i, s) == (o, 1)
                            else nn.Sequential(*(make(i, o, s) for make in layers)))


def test_shortcut_check_explains_a_wrong_option_b():
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
        # wrong channel counts: a hint, not PyTorch's RuntimeError
        _projection(lambda i, o, s: nn.Conv2d(o, o, 1, stride=s, bias=False), bn):
            "expects 128 input channels, but it receives 64",
        _projection(conv, lambda i, o, s: nn.BatchNorm2d(i)):
            "BatchNorm2d has 64 features, but the tensor it normalizes has 128",
        (lambda i, o, s: None): "must take x to F(x)'s shape",
        (lambda i, o, s: nn.Identity()): "must take x to F(x)'s shape",
        # a bare 1x1 conv: the missing BatchNorm named, with the reason
        _projection(conv): "no BatchNorm after its conv",
        _projection(conv, bn, lambda i, o, s: nn.ReLU()): "must stay linear",
        _projection(lambda i, o, s: nn.Conv2d(i, o, 1, stride=s), bn): "bias=False",
        _projection(lambda i, o, s: nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), bn):
            "kernel_size=1",
        _projection(lambda i, o, s: nn.BatchNorm2d(i), conv): "before the conv",
        _projection(lambda i, o, s: nn.AvgPool2d(s, s, ceil_mode=True),
                    lambda i, o, s: nn.Conv2d(i, o, 1, bias=False), bn): "ResNet-D",
        (lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 1, stride=s, bias=False),
                                       nn.BatchNorm2d(o))): "option C",
        constant: "does not depend on x",
        not_a_module: "return an nn.Module",
        unattempted: "not attempted",
    }
    for fn, hint in cases.items():
        feedback = check_shortcut(fn)
        assert not feedback and hint in feedback.message, (hint, feedback.message)
        assert "Error:" not in feedback.message and "running your answer raised" not in \
            feedback.message, feedback.message
    bare = check_shortcut(_projection(conv))
    assert "He et al. 2015" in bare.message and "torchvision" in bare.message
    assert "F(x) ends in BatchNorm" in bare.message


def test_notebook_states_the_rules_the_shortcut_check_enforces():
    """Exercise 1's instructions name both accepted options and every rule of the check."""
    import json

    cells = json.loads(NOTEBOOK.read_text())["cells"]
    i = next(i for i, c in enumerate(cells) if "check_shortcut(make_shortcut)" in
             "".join(c["source"]) and c["cell_type"] == "code")
    text = "".join(cells[i - 1]["source"])
    for rule in ("option A", "option B", "BatchNorm", "no bias", "padding 0", "stride",
                 "symmetric", "`None`", "option C", "ReLU", "make_downsample", "nn.Module"):
        assert rule in text, rule


def test_judge_shortcut_stays_option_b_for_notebook_05():
    """`judge_shortcut` (notebook 05) accepts option B only; option A is named, not accepted."""
    from resnet_edu.course.exercise import NotYet
    from resnet_edu.course.nb03_shapes import judge_shortcut, judge_shortcut_option

    assert judge_shortcut(_option_b(16, 32, 2), 16, 32, 2) == (
        "a 1x1 conv with the block's stride, no bias, then BatchNorm")
    assert judge_shortcut(None, 16, 16, 1) == "the identity, since x already has F(x)'s shape"
    with pytest.raises(NotYet, match=r"is option A .* asks for option B"):
        judge_shortcut(_ZeroChannels(16, 32, 2), 16, 32, 2)
    with pytest.raises(NotYet, match="needs a projection"):
        judge_shortcut(None, 16, 32, 2)
    verdict = judge_shortcut_option(_ZeroChannels(16, 32, 2), 16, 32, 2)
    assert (verdict.option, verdict.parameters) == ("A", 0)
    verdict = judge_shortcut_option(_option_b(16, 32, 2), 16, 32, 2)
    assert (verdict.option, verdict.parameters) == ("B", 16 * 32 + 2 * 32)

    no_bn = _projection(lambda i, o, s: nn.Conv2d(i, o, 1, stride=s, bias=False))
    assert check_shortcut(_option_b)
    feedback = check_shortcut(no_bn)
    assert not feedback and "no BatchNorm after its conv" in feedback.message


def test_resnet18_sizes_prediction():
    from resnet_edu.course.nb03_shapes import check_resnet18_sizes, resnet18_sizes

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


def test_conv_output_size_names_a_forgotten_return():
    def stub(size, kernel, stride, padding, dilation=1):
        ...  # your formula: return an int

    def no_return(size, kernel, stride, padding, dilation=1):
        (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1

    assert "not attempted" in check_conv_output_size(stub).message
    feedback = check_conv_output_size(no_return)
    assert not feedback and "`return` missing" in feedback.message
