"""Checks for the exercises of notebook 05 (bug hunt). Each returns `Feedback`, never raises."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..diagnostics import ACTIVATIONS, diagnose
from ..models import cifar_resnet, count_parameters
from . import NotYet, exercise, judge_choice, one_thread
from .bugs import SUSPECTS, GoodBlock, TinyResNet, evaluate_correctly
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
    """`evaluate(model, images)` predicts in eval mode, without autograd."""
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
    """Mark each claim in `CLAIMS` True or False."""
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


# --- suspect 1: which of TinyResNet's three blocks crashes? --------------------------------

CRASH_OPTIONS = ("layers.0.0", "layers.1.0", "layers.2.0", "all three", "none")


def crashing_blocks(block: Callable[[int, int, int], nn.Module] = SUSPECTS[1]) -> list[str]:
    """The blocks of `TinyResNet(block)` whose forward raises, each run alone on a batch."""
    net, crashed = TinyResNet(block), []
    for name, stage in net.layers.named_children():
        for index, b in stage.named_children():
            x = torch.randn(2, b.conv1.in_channels, 16, 16)  # (B, C_in, H, W)
            try:
                b(x)
            except Exception:
                crashed.append(f"layers.{name}.{index}")
    return crashed


@exercise
def check_crash_prediction(guess: object) -> str:
    """Prediction: which block of `TinyResNet(SUSPECTS[1])` crashes when run alone."""
    crashed = crashing_blocks()
    right = ("none" if not crashed else crashed[0] if len(crashed) == 1 else
             "all three" if len(crashed) == 3 else ", ".join(crashed))
    return judge_choice(
        guess, right, CRASH_OPTIONS, what="the block that crashes",
        why="forward reads self.in_channels, which __init__ never set, but Python reads an "
            "attribute only when the line runs: `self.stride != 1 or ...` stops at the `or` "
            "in the two stride-2 blocks, so only the stride-1 block reaches it.")


# --- the exercise: fix a copied block -----------------------------------------------------

FIX_CASES = ((16, 16, 1), (16, 32, 2))


def _compare_with_good_block(block: Callable[[int, int, int], nn.Module], cin: int, cout: int,
                             stride: int) -> None:
    """Copy a GoodBlock's weights into `block(cin, cout, stride)`; the same output and the same
    input gradient, in train mode, or NotYet saying what differs."""
    case = f"block({cin}, {cout}, {stride})"
    torch.manual_seed(0)
    good, mine = GoodBlock(cin, cout, stride), block(cin, cout, stride)
    theirs, ours = good.state_dict(), mine.state_dict()
    extra = [k for k in ours if k not in theirs]
    missing = [k for k in theirs if k not in ours]
    biases = [k for k in extra if k.endswith(".bias") and not k.startswith("bn")
              and ours[k].ndim == 1 and "shortcut" not in k]
    if biases:
        raise NotYet(f"{case} has {', '.join(biases)}: a conv bias right before BatchNorm is "
                     "cancelled by it (suspect 4); create those convs with bias=False.")
    shortcut = getattr(mine, "shortcut", None)
    acts = [f"shortcut.{n}" for n, m in shortcut.named_modules()
            if isinstance(m, ACTIVATIONS)] if isinstance(shortcut, nn.Module) else []
    if acts:
        raise NotYet(f"{case}'s shortcut contains an activation ({', '.join(acts)}): the "
                     "shortcut stays linear (suspect 2); the only ReLU is after the addition.")
    if any("shortcut" in k for k in extra) and stride == 1 and cin == cout:
        raise NotYet(f"{case} projects x although x already has the output shape (suspect 3): "
                     "use the identity there, and the projection only where stride != 1 or "
                     "in_channels != out_channels.")
    lacking = sorted({k.rsplit(".", 1)[0] for k in missing if k.startswith("shortcut")})
    if lacking:
        raise NotYet(f"{case} has no {' or '.join(lacking)} in its shortcut: where "
                     "the shape changes, the shortcut is a 1x1 conv with the block's stride, "
                     "then BatchNorm, as `self.shortcut = nn.Sequential(conv, bn)`.")
    if extra or missing:
        raise NotYet(f"{case}'s weights are not named like the block you fix "
                     f"(extra: {', '.join(extra) or 'none'}; missing: "
                     f"{', '.join(missing) or 'none'}): keep conv1, bn1, conv2, bn2 and "
                     "shortcut, so that the check can copy a correct block's weights into it.")
    mine.load_state_dict(theirs)
    good.train(), mine.train()
    x = torch.randn(4, cin, 8, 8)
    x_good, x_mine = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_good = good(x_good)
    try:
        y_mine = mine(x_mine)
    except RuntimeError as e:  # e.g. F(x) + x with two shapes: diagnose names both
        _no_findings(block, f"{case} fails on a {tuple(x.shape)} input ({e})")
        raise
    if tuple(y_mine.shape) != tuple(y_good.shape):
        raise NotYet(f"{case} maps {tuple(x.shape)} to {tuple(y_mine.shape)}, a correct block "
                     f"to {tuple(y_good.shape)}.")
    if not torch.allclose(y_mine, y_good, atol=1e-5):
        raise NotYet(f"with a correct block's weights, {case}'s output differs from it (max "
                     f"difference {float((y_mine - y_good).detach().abs().max()):.2g}): "
                     "y = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)).")
    y_good.square().sum().backward()
    y_mine.square().sum().backward()
    if not torch.allclose(x_mine.grad, x_good.grad, atol=1e-4, rtol=1e-4):
        raise NotYet(f"{case} computes the right output, but the gradient that reaches x is "
                     "not a correct block's: is the shortcut's path cut out of the autograd "
                     "graph (suspect 10)? Add x itself, not x.clone().detach().")


def _no_findings(block: Callable[[int, int, int], nn.Module], context: str):
    """diagnose a TinyResNet of `block`; NotYet with its first finding, if any."""
    report = diagnose(TinyResNet(block, depth=2), (3, 32, 32))
    if report.findings:
        first = report.findings[0]
        lead = f"{context}; " if context else ""
        raise NotYet(f"{lead}diagnose finds {len(report.findings)} problem(s), the first: "
                     f"[{first.check}] at {first.where}: {first.what} Fix: {first.fix}")
    return report


@exercise
def check_fixed_block(block: Callable[[int, int, int], nn.Module]) -> str:
    """Exercise 1: a fix of `bugs.CopiedBlock`, checked against `GoodBlock` with copied
    weights (output and input gradient) and with `diagnose` on a TinyResNet of it."""
    with one_thread():
        return _check_fixed_block(block)


def _check_fixed_block(block: Callable[[int, int, int], nn.Module]) -> str:
    for cin, cout, stride in FIX_CASES:
        _compare_with_good_block(block, cin, cout, stride)
    report = _no_findings(block, "")
    return ("with a BasicBlock's weights your block gives its output and its gradient, and "
            f"diagnose finds nothing in a net of {len(report.blocks)} of them.")
