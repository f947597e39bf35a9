"""Checks for the exercises of notebook 05 (bug hunt). Each returns `Feedback`, never raises."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..diagnostics import diagnose
from ..models import cifar_resnet, count_parameters
from . import NotYet, exercise
from .bugs import GoodBlock, TinyResNet, evaluate_correctly
from .shapes import judge_shortcut

# (in_channels, out_channels, stride) cases, with and without a shape change
SHORTCUT_CASES = ((16, 16, 1), (16, 32, 2), (32, 32, 2), (32, 64, 1), (64, 64, 1))

CLAIMS = {
    "stride2_doubles": "A 3x3 conv with stride 2 and padding 1 turns a 32x32 map into 64x64.",
    "shortcut_shares_parameters": "A residual connection shares the main path's parameters.",
    "identity_is_free": "An identity shortcut adds no parameters to a block.",
    "identity_reduces_parameters": "Identity mappings reduce the number of parameters: "
                                   "ResNet-18 has fewer than the plain 18-layer net.",
    "bias_cancelled_by_bn": "A conv bias right before BatchNorm (train mode) does not change "
                            "the block's output.",
}


@exercise
def check_shortcut_for(shortcut_for: Callable[[int, int, int], nn.Module | None]) -> str:
    """Exercise 1: `shortcut_for(in_channels, out_channels, stride)` builds the right shortcut,
    judged by the series' one shortcut rule (`shapes.judge_shortcut`, as in notebook 03)."""
    for cin, cout, stride in SHORTCUT_CASES:
        judge_shortcut(shortcut_for(cin, cout, stride), cin, cout, stride)
    return ("identity where the shapes match, 1x1 conv (with the block's stride) + BatchNorm "
            "where they don't: option B of He et al. 2015.")


@exercise
def check_evaluate(evaluate: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> str:
    """Exercise 2: `evaluate(model, images)` predicts in eval mode, without autograd."""
    torch.manual_seed(0)
    model = cifar_resnet(8)
    with torch.no_grad():  # give BatchNorm running statistics that differ from the batch's
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    images = torch.randn(16, 3, 32, 32)
    want = evaluate_correctly(model, images)
    running = model.bn1.running_mean.clone()
    grad_seen: list[bool] = []
    hook = model.register_forward_pre_hook(lambda m, a: grad_seen.append(torch.is_grad_enabled()))
    model.train()
    try:
        got = evaluate(model, images)
    finally:
        hook.remove()
    if got is None:
        raise NotYet("evaluate returned None: return the predicted classes, "
                     "`model(images).argmax(dim=1)`, computed the right way.")
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        raise NotYet(f"evaluate should return the predicted classes, a tensor of shape "
                     f"{tuple(want.shape)}; got {getattr(got, 'shape', type(got).__name__)}.")
    if not torch.equal(model.bn1.running_mean, running):
        raise NotYet("evaluating changed BatchNorm's running statistics: the model was in "
                     "train mode. Call model.eval() first.")
    if not torch.equal(got.cpu(), want):
        raise NotYet("the predictions differ from eval mode's: call model.eval() first.")
    if any(grad_seen):
        raise NotYet("autograd was recording during the forward pass: wrap it in "
                      "`with torch.no_grad():`.")
    note = "" if model.training else (" (Tip: put the mode back with model.train(was_training) "
                                      "so the caller's training loop is not affected.)")
    return "eval mode, no autograd, and the predictions no longer depend on the batch." + note


def resnet18_parameter_difference() -> dict[str, int]:
    """ResNet-18's parameters minus those of its plain twin (same layers, no shortcuts), with
    option A (zero-padded identity) and option B (projections where the shape changes)."""
    from ..models import resnet18

    plain = count_parameters(resnet18(residual=False))
    return {o: count_parameters(resnet18(shortcut=o)) - plain for o in "AB"}


def claim_evidence() -> dict[str, bool]:
    """Each claim's truth, measured with torch rather than asserted."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)
    doubles = tuple(conv(torch.zeros(1, 3, 32, 32)).shape[2:]) == (64, 64)
    block, plain = GoodBlock(16, 16, 1), GoodBlock(16, 16, 1)
    plain.shortcut = None  # the same block without its (identity) shortcut module
    free = count_parameters(block) == count_parameters(plain)
    shares = any(p is q for p in block.shortcut.parameters() for q in block.conv1.parameters())
    with_bias = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4))
    without = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
    without[0].weight.data.copy_(with_bias[0].weight.data)
    nn.init.normal_(with_bias[0].bias, std=1.0)
    x = torch.randn(4, 3, 8, 8)
    cancelled = torch.allclose(with_bias(x), without(x), atol=1e-5)
    fewer = any(d < 0 for d in resnet18_parameter_difference().values())
    return {"stride2_doubles": doubles, "shortcut_shares_parameters": shares,
            "identity_is_free": free, "identity_reduces_parameters": fewer,
            "bias_cancelled_by_bn": cancelled}


_WHY = {
    "stride2_doubles": "a stride-2 conv reads every other position: 32x32 becomes 16x16 "
                       "(floor((32 + 2 - 3) / 2) + 1 = 16).",
    "shortcut_shares_parameters": "the identity shortcut has no parameters at all, and a "
                                  "projection has its own 1x1 conv; nothing is shared.",
    "identity_is_free": "x is added as it is, so the block has exactly the parameters of its "
                        "main path.",
    "identity_reduces_parameters": "an identity adds x as it is, so it adds no parameters, "
                                   "and removes none: ResNet-18 with option A has exactly the "
                                   "plain net's parameters, and with option B its projections "
                                   "add {B:,}.",
    "bias_cancelled_by_bn": "BatchNorm subtracts each channel's batch mean, and the bias only "
                            "shifts that mean.",
}


@exercise
def check_claims(answers: dict[str, bool]) -> str:
    """Exercise 3: mark each claim in `CLAIMS` True or False."""
    if not isinstance(answers, dict):
        raise NotYet(f"answers should be a dict from claim name to True/False, got "
                     f"{type(answers).__name__}.")
    missing = [k for k in CLAIMS if not isinstance(answers.get(k), bool)]
    if missing:
        raise NotYet(f"give True or False for: {', '.join(missing)}.")
    truth = claim_evidence()
    wrong = [k for k in CLAIMS if answers[k] != truth[k]]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong) - 1} more to rethink.)" if len(wrong) > 1 else ""
        return_word = "true" if truth[k] else "false"
        why = _WHY[k].format(**resnet18_parameter_difference()) if "{" in _WHY[k] else _WHY[k]
        raise NotYet(f"'{CLAIMS[k]}' is {return_word}: {why}{more}")
    return f"all {len(CLAIMS)} claims judged right, each checked by running torch."


@exercise
def check_block(block: Callable[[int, int, int], nn.Module]) -> str:
    """Exercise 4: a block `block(in_channels, out_channels, stride)` diagnose finds clean."""
    for cin, cout, stride in ((16, 16, 1), (16, 32, 2)):
        b = block(cin, cout, stride)
        got = tuple(b(torch.randn(2, cin, 16, 16)).shape)
        want = (2, cout, 16 // stride, 16 // stride)
        if got != want:
            raise NotYet(f"block({cin}, {cout}, {stride}) maps (2, {cin}, 16, 16) to {got}, "
                         f"expected {want}.")
    report = diagnose(TinyResNet(block, depth=2), (3, 32, 32))
    if report.findings:
        first = report.findings[0]
        raise NotYet(f"diagnose finds {len(report.findings)} problem(s); the first: "
                     f"[{first.check}] at {first.where}: {first.what} Fix: {first.fix}")
    if not report.blocks:
        raise NotYet("diagnose found no residual block: forward must add the block's input "
                     "(or its projection) to the main path's output, y = F(x) + x.")
    ours = count_parameters(TinyResNet(GoodBlock, depth=2))
    theirs = count_parameters(TinyResNet(block, depth=2))
    if theirs != ours:
        raise NotYet(f"the net has {theirs:,} parameters with your block and {ours:,} with a "
                     "BasicBlock (option B): look for an extra or a missing layer.")
    return f"diagnose finds nothing, and the net has the BasicBlock's {ours:,} parameters."
