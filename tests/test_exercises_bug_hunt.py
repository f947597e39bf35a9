"""The bug-hunt checks: pass right answers, give specific feedback on each wrong one."""

from __future__ import annotations

import torch
from torch import nn

from resnet_edu.exercises import bugs
from resnet_edu.exercises.bug_hunt import (
    CLAIMS,
    check_block,
    check_claims,
    check_evaluate,
    check_shortcut_for,
    claim_evidence,
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


def test_block():
    assert check_block(bugs.GoodBlock)
    assert not check_block(unattempted)
    for name, check in bugs.PLANTED.items():
        cls = getattr(bugs, name)
        if issubclass(cls, bugs.TinyResNet) or check == "gradient-flow":
            continue  # not a block mistake, or one that needs a deep net to show
        fb = check_block(cls)
        assert not fb, name
    fb = check_block(bugs.BiasBeforeNormBlock)
    assert "bias-before-norm" in fb.message

    class OtherShortcutName(bugs.GoodBlock):  # blocks are found by what they compute
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            self.skip_path = self.__dict__["_modules"].pop("shortcut")

        def forward(self, x):
            return self.relu(self.main_path(x) + self.skip_path(x))

    assert check_block(OtherShortcutName)

    class NoAddition(bugs.GoodBlock):
        def forward(self, x):
            return self.relu(self.main_path(x))  # the shortcut is built but never added

    assert "no residual block" in check_block(NoAddition).message
