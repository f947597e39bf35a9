"""The bug-hunt checks: pass right answers, give specific feedback on each wrong one."""

from __future__ import annotations

import torch
from torch import nn

from resnet_edu.diagnostics import diagnose
from resnet_edu.exercises import bugs
from resnet_edu.exercises.bug_hunt import (
    CLAIMS,
    check_claims,
    check_crash_prediction,
    check_evaluate,
    check_fixed_block,
    check_shortcut_for,
    claim_evidence,
    crashing_blocks,
    resnet18_parameter_difference,
)


def right_shortcut(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def unattempted(*args):
    raise NotImplementedError


def test_shortcut_for():
    assert check_shortcut_for(right_shortcut)
    fb = check_shortcut_for(unattempted)
    assert not fb and "not attempted" in fb.message
    always = check_shortcut_for(lambda i, o, s: nn.Sequential(
        nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o)))
    assert not always and "return None" in always.message
    stride1 = check_shortcut_for(lambda i, o, s: None if (i, s) == (o, 1) else nn.Sequential(
        nn.Conv2d(i, o, 1, 1, bias=False), nn.BatchNorm2d(o)))
    assert not stride1 and "stride" in stride1.message and "(2, 32, 4, 4)" in stride1.message
    relu = check_shortcut_for(lambda i, o, s: None if (i, s) == (o, 1) else nn.Sequential(
        nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o), nn.ReLU()))
    assert not relu and "ReLU" in relu.message
    no_bn = check_shortcut_for(lambda i, o, s: None if (i, s) == (o, 1) else
                               nn.Conv2d(i, o, 1, s, bias=False))
    assert not no_bn and "BatchNorm" in no_bn.message
    never = check_shortcut_for(lambda i, o, s: None)
    assert not never and "needs a projection" in never.message


def test_evaluate():
    def right(model, images):
        was = model.training
        model.eval()
        with torch.no_grad():
            out = model(images).argmax(1)
        model.train(was)
        return out

    def eval_but_grad(model, images):
        model.eval()
        return model(images).argmax(1)

    assert check_evaluate(right)
    assert check_evaluate(bugs.evaluate_correctly)
    fb = check_evaluate(bugs.evaluate_forgetting_eval)
    assert not fb and "model.eval()" in fb.message
    fb = check_evaluate(eval_but_grad)
    assert not fb and "no_grad" in fb.message
    assert "Tip" in check_evaluate(_no_grad_eval).message
    assert "Tip" not in check_evaluate(right).message
    assert not check_evaluate(lambda m, x: m(x))  # logits, not classes
    assert not check_evaluate(unattempted)


def _no_grad_eval(model, images):
    model.eval()  # right answer, but leaves the model in eval mode
    with torch.no_grad():
        return model(images).argmax(1)


def test_claims_match_measurement_and_feedback_names_the_wrong_claim():
    truth = claim_evidence()
    assert truth == {"stride2_doubles": False, "shortcut_shares_parameters": False,
                     "identity_is_free": True, "identity_reduces_parameters": False,
                     "bias_cancelled_by_bn": True}
    assert check_claims(truth)
    wrong = dict(truth, stride2_doubles=True)
    fb = check_claims(wrong)
    assert not fb and CLAIMS["stride2_doubles"] in fb.message and "16x16" in fb.message
    fb = check_claims({k: not v for k, v in truth.items()})
    assert not fb and f"{len(CLAIMS) - 1} more" in fb.message
    assert "give True or False" in check_claims({}).message
    assert not check_claims(["no"])


def test_identity_mappings_do_not_reduce_parameters():
    """Oracle: ResNet-18's option-B projections counted by hand, a 1x1 conv (no bias) and a
    BatchNorm at each of the three stage transitions 64->128->256->512."""
    by_hand = sum(cin * cout + 2 * cout for cin, cout in ((64, 128), (128, 256), (256, 512)))
    assert resnet18_parameter_difference() == {"A": 0, "B": by_hand}
    fb = check_claims(dict(claim_evidence(), identity_reduces_parameters=True))
    assert not fb and f"{by_hand:,}" in fb.message and "option A" in fb.message


def test_crash_prediction_is_the_stride_one_block():
    assert crashing_blocks() == ["layers.0.0"]  # measured: the blocks run one by one
    assert crashing_blocks(bugs.GoodBlock) == []
    assert check_crash_prediction("layers.0.0")
    assert check_crash_prediction(" Layers.0.0 ")
    fb = check_crash_prediction("all three")
    assert not fb and "it is 'layers.0.0'" in fb.message and "short" not in fb.message
    assert "`or`" in fb.message  # says why
    assert "one of" in check_crash_prediction("layers.3.0").message
    assert "first" in check_crash_prediction(...).message


class FixedBlock(nn.Module):
    """The solution of Exercise 1: CopiedBlock with its four mistakes fixed."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def test_fixed_block_passes_and_each_mistake_gets_its_hint():
    assert check_fixed_block(FixedBlock)
    assert check_fixed_block(bugs.GoodBlock)

    class IdentityAsNone(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            if not len(self.shortcut):
                self.shortcut = None

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.shortcut is None else self.shortcut(x)))

    assert check_fixed_block(IdentityAsNone)
    assert "not attempted" in check_fixed_block(unattempted).message
    hints = {
        bugs.CopiedBlock: "bias=False",  # the first of its four mistakes
        bugs.BiasBeforeNormBlock: "bias=False",
        bugs.AlwaysProjectBlock: "use the identity there",
        bugs.ReluShortcutBlock: "stays linear",
        bugs.StrideOneShortcutBlock: "stays linear",
        bugs.DetachedShortcutBlock: "detach",
        bugs.ForgetfulBlock: "AttributeError",
    }
    for block, hint in hints.items():
        fb = check_fixed_block(block)
        assert not fb and hint in fb.message, (block.__name__, fb.message)

    class NoFinalRelu(FixedBlock):
        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return self.bn2(self.conv2(out)) + self.shortcut(x)

    fb = check_fixed_block(NoFinalRelu)
    assert not fb and "output differs" in fb.message and "ReLU(" in fb.message

    class NoProjectionNorm(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            if len(self.shortcut):
                self.shortcut = nn.Sequential(self.shortcut[0])

    fb = check_fixed_block(NoProjectionNorm)
    assert not fb and "shortcut.1" in fb.message and "BatchNorm" in fb.message

    class WrongStride(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            if len(self.shortcut):
                self.shortcut[0].stride = (1, 1)

    fb = check_fixed_block(WrongStride)
    assert not fb and "shape-mismatch" in fb.message and "stride=2" in fb.message

    class Renamed(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            self.first = self.__dict__["_modules"].pop("conv1")

        def forward(self, x):
            out = torch.relu(self.bn1(self.first(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    fb = check_fixed_block(Renamed)
    assert not fb and "keep conv1" in fb.message


def test_suspects_are_the_planted_mistakes():
    assert bugs.SUSPECTS[1] is bugs.ForgetfulBlock and bugs.SUSPECTS[8] is bugs.predict_classes
    assert bugs.evaluate_forgetting_eval is bugs.predict_classes
    names = {getattr(s, "__name__", "") for s in bugs.SUSPECTS.values() if not isinstance(s, tuple)}
    assert set(bugs.PLANTED) - {"ReluShortcutBlock"} <= names
    report = diagnose(bugs.TinyResNet(bugs.CopiedBlock, depth=2), (3, 32, 32))
    assert {"bias-before-norm", "unneeded-projection", "shortcut-activation"} <= set(report.checks)
