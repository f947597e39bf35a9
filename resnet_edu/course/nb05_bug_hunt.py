"""Checks for the exercises of notebook 05 (bug hunt). Each returns `Feedback`, never raises."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import torch
from torch import nn

from ..diagnostics import diagnose
from .exercise import NotYet, close, exercise, judge_choice, one_thread, require_prediction
from .nb03_shapes import judge_shortcut
from .suspects import SUSPECTS, GoodBlock, TinyResNet, evaluate_correctly

CLAIMS = {
    "relu_shortcut_keeps_gradient": "A ReLU on an identity shortcut passes the gradient back "
                                    "to x unchanged.",
    "log_softmax_same_loss": "A forward that ends in log_softmax gives nn.CrossEntropyLoss the "
                             "same loss and the same gradient as one that returns the logits.",
    "dropout_eval_identity": "In eval mode, nn.Dropout(p=0.5) returns its input unchanged.",
    "bias_removable_after_training": "After training, setting to zero the bias of a conv that "
                                     "feeds BatchNorm leaves the eval-mode output unchanged.",
    "zero_gamma_stops_conv_gradient": "With the weight (gamma) of a block's last BatchNorm set "
                                      "to 0, the block's two convs receive no gradient.",
}


def accuracy_setup() -> tuple[nn.Module, torch.utils.data.DataLoader]:
    """The model and loader `check_accuracy` uses: a small net with BatchNorm and Dropout whose
    running statistics differ from any batch's, and 50 labelled images in batches of 16 (the
    last batch holds 2), labelled so that a third of the predictions are wrong."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(8, 10))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    images = torch.randn(50, 3, 8, 8)
    predicted = evaluate_correctly(model, images)
    labels = torch.where(torch.arange(50) % 3 == 0, (predicted + 1) % 10, predicted)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels),
                                         batch_size=16)
    return model, loader


def accuracy_oracle(model: nn.Module, loader) -> tuple[float, float]:
    """(accuracy over all images, mean of the per-batch accuracies), in eval mode."""
    correct, total, per_batch = 0, 0, []
    for images, labels in loader:
        hits = int((evaluate_correctly(model, images) == labels).sum())
        correct, total = correct + hits, total + len(labels)
        per_batch.append(hits / len(labels))
    return correct / total, sum(per_batch) / len(per_batch)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def called_from_library(*checks: str) -> bool:
    """Inside a forward hook: True when the code that called the model (the first frame
    outside torch and outside the check files `checks`, this one always among them) is this
    package's, e.g. `bugs.evaluate_correctly`, `accuracy_oracle` or the trainer's
    `train_step`."""
    skip = {os.path.abspath(__file__), *(os.path.abspath(c) for c in checks)}
    frame = sys._getframe(1)
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_TORCH_DIR + os.sep) and path not in skip:
            return path.startswith(_PACKAGE_DIR + os.sep)
        frame = frame.f_back
    return False


def raised_in_library(error: BaseException) -> bool:
    """True when `error` was raised inside this package's own code (not a check's, not
    torch's): the student's function called a function of resnet_edu that failed."""
    tb, found = error.__traceback__, False
    exercises = os.path.dirname(os.path.abspath(__file__)) + os.sep
    while tb is not None:
        path = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if path.startswith(_PACKAGE_DIR + os.sep) and not path.startswith(exercises):
            found = True
        tb = tb.tb_next
    return found


def _one_batch_hint(got: float, model: nn.Module, loader) -> str | None:
    """When `got` is the accuracy of a single batch: which one, in words."""
    accuracies = [float((evaluate_correctly(model, images) == labels).float().mean())
                  for images, labels in loader]
    for i, acc in enumerate(accuracies):
        if close(got, acc, rel=1e-6) and not all(close(a, acc, rel=1e-6) for a in accuracies):
            which = ("the last batch" if i == len(accuracies) - 1 else
                     "the first batch" if i == 0 else f"batch {i}")
            return (f"{got:.4g} is the accuracy of {which} alone, one of {len(accuracies)}: the "
                    "count is overwritten in every iteration instead of added up. Add up the "
                    "correct images over every batch, then divide by the number of images.")
    return None


def _denominator_hint(got: float, correct: int, loader) -> str | None:
    """What a number that is `correct` over the wrong count was divided by, in words."""
    images, batches = len(loader.dataset), len(loader)
    if got <= 0:
        return None
    divisor = correct / got
    if abs(divisor - round(divisor)) > 1e-6 or round(divisor) == images:
        return None
    divisor = round(divisor)
    if divisor == batches:
        return (f"{got:.4g} is the number of images classified right divided by {batches}, "
                "the number of batches (len(loader)): an accuracy is a fraction of images.")
    if divisor == batches * loader.batch_size:
        return (f"{got:.4g} is the number of images classified right divided by {divisor}, "
                f"{batches} batches times a batch size of {loader.batch_size}; but not every "
                "batch is full. Count the images themselves.")
    return (f"{got:.4g} is the number of images classified right divided by {divisor}, which "
            "is not the number of images in the loader.")


@exercise
def check_accuracy(accuracy: Callable[[nn.Module, object], float]) -> str:
    """Exercise 2: `accuracy(model, loader)` -> the fraction of the loader's images classified
    right, without autograd, leaving the model in the mode it came in; the student's own
    loop (a library function that runs the model is refused)."""
    model, loader = accuracy_setup()
    want, batch_mean = accuracy_oracle(model, loader)
    correct = round(want * len(loader.dataset))
    running = model[1].running_mean.clone()
    seen: list[tuple[bool, bool, bool, bool]] = []  # grad, BN train, Dropout train, library

    def record(module, args):
        seen.append((torch.is_grad_enabled(), model[1].training, model[5].training,
                     called_from_library()))

    hook = model.register_forward_pre_hook(record)
    model.train()
    try:
        got = accuracy(model, loader)
    except NotImplementedError:
        raise
    except Exception as e:
        if raised_in_library(e) or any(library for *_, library in seen):
            raise NotYet("your function called a function of resnet_edu, which failed on this "
                         "loader: write the loop over the loader yourself (the exercise is what "
                         "such a function does).") from None
        raise NotYet(f"your function stopped with {type(e).__name__} ({e}). The loader gives "
                     "(images, labels) batches, images of shape (B, 3, 8, 8) and labels of "
                     "shape (B,), and model(images) gives (B, 10) scores, one per class: "
                     "compare the predicted class of each image with its label.") from None
    finally:
        hook.remove()
    if got is None and not seen:
        raise NotImplementedError
    if any(library for *_, library in seen):
        raise NotYet("the model was run by a function of resnet_edu, not by your loop: write "
                     "the loop over the loader yourself (the exercise is what that function "
                     "does).")
    if torch.is_tensor(got) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise NotYet(f"accuracy should return one number, the fraction of images classified "
                     f"right; got {type(got).__name__}.")
    if not seen:
        raise NotYet(f"your function returned {got:.4g} without running the model on the "
                     "loader's images.")
    if not torch.equal(model[1].running_mean, running):
        raise NotYet("computing the accuracy changed BatchNorm's running statistics: the model "
                     "ran in train mode.")
    if close(got, 100 * want, rel=1e-6):
        raise NotYet(f"{got:.4g} is a percentage: return the fraction, between 0 and 1.")
    if close(got, batch_mean, rel=1e-6) and not close(got, want, rel=1e-6):
        raise NotYet(f"{got:.4g} is the mean of the per-batch accuracies, but the last batch "
                     f"holds only {len(loader.dataset) % loader.batch_size} images: count the "
                     "correct images over all batches and divide by the number of images.")
    if not close(got, want, rel=1e-6):
        if any(dropout for _, _, dropout, _ in seen):
            raise NotYet(f"you got {got:.4g}, and Dropout was in train mode during your "
                         "forward passes: it drops units at random. Put the whole model in "
                         "eval mode.")
        if got == correct:
            raise NotYet(f"{got} is the number of images classified right: return the "
                         "fraction of the loader's images.")
        one = _one_batch_hint(got, model, loader)
        if one:
            raise NotYet(one)
        hint = _denominator_hint(got, correct, loader)
        if hint:
            raise NotYet(hint)
        raise NotYet(f"the model ran in eval mode, but {got:.4g} is not the fraction of images "
                     "classified right: an image is right when its predicted class, the index "
                     "of its largest score, equals its label; count those over every batch.")
    if any(grad for grad, *_ in seen):
        raise NotYet("the right number, but autograd was recording during the forward passes: "
                     "wrap them in `with torch.no_grad():`.")
    if not model.training:
        raise NotYet("the right number, but the model came in train mode and left in eval "
                     "mode: a training loop that calls your function would go on training "
                     "with BatchNorm frozen and Dropout off. Put the mode back at the end.")
    model.eval()
    try:
        again = accuracy(model, loader)
    except Exception as e:
        raise NotYet(f"called on a model already in eval mode, your function stopped with "
                     f"{type(e).__name__} ({e}).") from None
    if model.training:
        raise NotYet("called on a model in eval mode, your function left it in train mode: "
                     "restore the mode the model came in, not always train mode.")
    if torch.is_tensor(again) and again.numel() == 1:
        again = again.item()
    if not isinstance(again, (int, float)) or not close(float(again), want, rel=1e-6):
        raise NotYet(f"called on a model already in eval mode, your function returned "
                     f"{again!r}, not the {want:.4g} it returned before.")
    return (f"{want:.4g} of the {len(loader.dataset)} images, counted over batches of unequal "
            "size, without autograd, and the model keeps the mode it came in.")


def claim_evidence() -> dict[str, bool]:
    """Each claim's truth, measured with torch rather than asserted."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, 6, 6, requires_grad=True)
    upstream = torch.randn(4, 8, 6, 6)
    (through_relu,) = torch.autograd.grad((torch.relu(x) * upstream).sum(), x)
    keeps = torch.allclose(through_relu, upstream)

    z, y = torch.randn(8, 10, requires_grad=True), torch.randint(0, 10, (8,))
    ce = nn.CrossEntropyLoss()
    plain, logged = ce(z, y), ce(torch.log_softmax(z, dim=1), y)
    same_grad = torch.allclose(*(torch.autograd.grad(loss, z)[0] for loss in (plain, logged)),
                               atol=1e-6)
    same_loss = torch.allclose(plain, logged, atol=1e-6) and same_grad

    dropout = nn.Dropout(0.5).eval()
    identity = torch.equal(dropout(x.detach()), x.detach())

    conv, norm = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4)
    nn.init.normal_(conv.bias, std=1.0)
    net = nn.Sequential(conv, norm).train()
    with torch.no_grad():
        for _ in range(20):  # "training": the running statistics see the bias
            net(torch.randn(16, 3, 8, 8))
        net.eval()
        probe = torch.randn(4, 3, 8, 8)
        before = net(probe)
        conv.bias.zero_()
        removable = torch.allclose(before, net(probe), atol=1e-5)

    block = GoodBlock(16, 16, 1).train()
    nn.init.zeros_(block.bn2.weight)
    block(torch.randn(4, 16, 8, 8)).square().sum().backward()
    stopped = all(not bool(c.weight.grad.abs().sum() > 0) for c in (block.conv1, block.conv2))
    return {"relu_shortcut_keeps_gradient": keeps, "log_softmax_same_loss": same_loss,
            "dropout_eval_identity": identity, "bias_removable_after_training": removable,
            "zero_gamma_stops_conv_gradient": stopped}


_WHY = {
    "relu_shortcut_keeps_gradient": "ReLU's derivative is 0 wherever its input is negative, so "
                                    "the gradient of every negative entry of x is cut, not "
                                    "passed back (about half of them here).",
    "log_softmax_same_loss": "log_softmax of log-probabilities changes nothing (their "
                             "exponentials already sum to 1), so the loss and its gradient "
                             "are the same; unlike softmax (suspect 5), it is harmless.",
    "dropout_eval_identity": "PyTorch's dropout scales the kept units by 1/(1-p) during "
                             "training, so that in eval mode it can be the identity.",
    "bias_removable_after_training": "in eval mode BatchNorm subtracts its running mean, which "
                                     "was accumulated with the bias in it; zeroing the bias "
                                     "afterwards shifts every output by -bias/sqrt(var). Only "
                                     "in train mode does the batch mean cancel it.",
    "zero_gamma_stops_conv_gradient": "the branch's output is gamma * normalized + beta, so "
                                      "with gamma = 0 no gradient gets back into the branch; "
                                      "gamma itself gets one, and the convs start learning "
                                      "after the first step has moved it.",
}


@exercise
def check_claims(answers: dict[str, bool]) -> str:
    """Mark each claim in `CLAIMS` True or False."""
    if not isinstance(answers, dict):
        raise NotYet(f"answers should be a dict from claim name to True/False, got "
                     f"{type(answers).__name__}.")
    missing = [k for k in CLAIMS if not isinstance(answers.get(k), bool)]
    quoted = [k for k in missing if isinstance(answers.get(k), str)
              and answers[k].strip().lower() in ("true", "false")]
    if quoted:
        raise NotYet(f"write True or False without quotes: {', '.join(quoted)} "
                     f"{'holds' if len(quoted) == 1 else 'hold'} the text {answers[quoted[0]]!r}, "
                     "a string, not a truth value.")
    if missing:
        raise NotYet(f"give True or False for: {', '.join(missing)}.")
    with one_thread():
        truth = claim_evidence()
    wrong = [k for k in CLAIMS if answers[k] != truth[k]]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong) - 1} more to rethink.)" if len(wrong) > 1 else ""
        return_word = "true" if truth[k] else "false"
        raise NotYet(f"'{CLAIMS[k]}' is {return_word}: {_WHY[k]}{more}")
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


# --- suspect 7: the ImageNet stem on a small image ----------------------------------------

def first_block_side(side: int) -> int:
    """The height (= width) of the maps the first block of torchvision-style `resnet18` sees
    for a side x side image, measured with a forward hook."""
    from ..models import resnet18

    model, seen = resnet18(num_classes=10).eval(), []
    hook = model.layer1.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[-1]))
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    finally:
        hook.remove()
    return int(seen[0])


@exercise
def check_stem_prediction(guess: object, side: int = 96) -> str:
    """Prediction: the side of the maps `resnet18`'s first block sees for a side x side image."""
    require_prediction(guess, f"the side of the maps for a {side}x{side} image")
    actual = first_block_side(side)
    if isinstance(guess, bool) or not isinstance(guess, (int, float)):
        raise NotYet(f"your prediction should be one number, the height (= width) in pixels; "
                     f"got {guess!r}")
    why = (f"the 7x7 conv has stride 2 ({side} -> {side // 2}) and the 3x3 max-pool after it "
           f"has stride 2 too ({side // 2} -> {actual}): the stem divides each side by 4.")
    if guess == actual:
        return f"{actual}x{actual}: {why}"
    if guess == side // 2:
        raise NotYet(f"{guess:g} counts the strided conv but not the max-pool after it: "
                     "look at the stem again.")
    if guess == side:
        raise NotYet(f"{guess:g} is the image's own size, but the stem is not the CIFAR one: "
                     "count its strided layers.")
    raise NotYet(f"you predicted {guess:g}, the first block sees {actual}x{actual} maps: {why}")


# --- the exercise: fix a copied block -----------------------------------------------------

FIX_CASES = ((16, 16, 1), (16, 32, 2))
FIX_NAMES = ("conv1", "bn1", "conv2", "bn2", "shortcut")


def _answer_blocks() -> tuple[type, ...]:
    """Blocks that already are the answer: the notebook's GoodBlock (and the base class it
    shares with the suspects), the library's blocks, torchvision's."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBasic
    from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

    from ..blocks import ResidualBlock
    from .suspects import _TwoConvBlock

    return (_TwoConvBlock, ResidualBlock, TorchvisionBasic, TorchvisionBottleneck)


def _borrowed_name(module: nn.Module) -> str:
    name = type(module).__name__
    if isinstance(module, GoodBlock) and type(module) is not GoodBlock:
        return f"{name}, a subclass of GoodBlock"
    if type(module).__module__.startswith("torchvision"):
        return f"torchvision's {name}"
    return name


def _build(block: Callable[[int, int, int], nn.Module], cin: int, cout: int,
           stride: int) -> nn.Module:
    """`block(cin, cout, stride)`, or NotYet saying in words why it could not be built."""
    case = f"block({cin}, {cout}, {stride})"
    try:
        mine = block(cin, cout, stride)
    except NotImplementedError:
        raise
    except TypeError as e:
        if "super(" in str(e):
            raise NotYet(f"creating {case} failed: `super(...)` names a class yours does not "
                         "derive from (suspect 6); write `super().__init__()`.") from None
        raise NotYet(f"{case} could not be created ({e}): __init__ must take "
                     "(in_channels, out_channels, stride=1), as CopiedBlock's does.") from None
    except AttributeError as e:
        if "before Module.__init__" in str(e):
            raise NotYet(f"creating {case} failed: a layer is assigned before "
                         "`super().__init__()` has run (suspect 6); call it first.") from None
        raise NotYet(f"creating {case} failed: __init__ reads an attribute it has not set "
                     f"yet ({e}).") from None
    except Exception as e:
        raise NotYet(f"creating {case} failed with {type(e).__name__} ({e}): __init__ only "
                     "creates the layers, as CopiedBlock's does.") from None
    if not isinstance(mine, nn.Module):
        raise NotYet(f"{case} gives a {type(mine).__name__}: RepairedBlock must be an "
                     "nn.Module, like CopiedBlock.")
    borrowed = next((m for m in mine.modules() if isinstance(m, _answer_blocks())), None)
    if borrowed is not None:
        raise NotYet(f"{case} is (or holds) {_borrowed_name(borrowed)}: the notebook or the "
                     "library wrote that block already. The point is to find CopiedBlock's "
                     "mistakes and fix them yourself: start from a copy of CopiedBlock, with "
                     "nn.Module as its base.")
    biased = [n for n, m in mine.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None]
    if biased:
        raise NotYet(f"{case} has convs with a bias ({', '.join(biased)}): each feeds a "
                     "BatchNorm, which subtracts the channel's mean and so cancels the bias "
                     "(suspect 4); create them with bias=False.")
    if not hasattr(mine, "shortcut"):
        others = [n for n in [*mine._modules, *(k for k, v in vars(mine).items()
                                                 if v is None and not k.startswith("_"))]
                  if n not in FIX_NAMES]
        yours = f" (yours: {', '.join(others)})" if others else ""
        raise NotYet(f"{case} has no attribute `shortcut`{yours}: keep CopiedBlock's names "
                     f"{', '.join(FIX_NAMES)}, so that the check can copy a correct block's "
                     "weights into yours.")
    return mine


def _judge_fixed_shortcut(mine: nn.Module, cin: int, cout: int, stride: int) -> None:
    shortcut = mine.shortcut
    projection = stride != 1 or cin != cout
    if (projection and isinstance(shortcut, nn.Module) and not isinstance(shortcut, nn.Identity)
            and not any(True for _ in shortcut.parameters())):
        raise NotYet(f"block({cin}, {cout}, {stride})'s shortcut has no weights (option A). "
                     "Option A is a fine shortcut, but this exercise repairs CopiedBlock, "
                     "whose projection is option B: where the shape changes, keep a 1x1 conv "
                     "and a BatchNorm in `shortcut`.")
    # the series' one shortcut rule, as notebook 03's exercise judges it (option B)
    judge_shortcut(shortcut, cin, cout, stride)


def _run(mine: nn.Module, x: torch.Tensor, case: str, block) -> torch.Tensor:
    """mine(x), or NotYet saying in words why the forward pass failed."""
    where = f"{case}'s forward, on a {tuple(x.shape)} input,"
    try:
        y = mine(x)
    except NotImplementedError:
        raise
    except AttributeError as e:
        raise NotYet(f"{where} reads an attribute that __init__ never set ({e}): store it in "
                     "__init__, or read it off a layer (suspect 1).") from None
    except RuntimeError as e:  # e.g. F(x) + x with two shapes: diagnose names both
        report = diagnose(TinyResNet(block, depth=2), (3, 32, 32))
        if "shape-mismatch" in report.checks:
            first = next(f for f in report.findings if f.check == "shape-mismatch")
            raise NotYet(f"{case} fails on a {tuple(x.shape)} input: diagnose finds "
                         f"[{first.check}] at {first.where}: {first.what} Fix: {first.fix}"
                         ) from None
        raise NotYet(f"{where} fails: a layer or the addition got a tensor of a shape it "
                     f"cannot take ({e}). Apply the same layers in the same order as "
                     "CopiedBlock.") from None
    except Exception as e:
        raise NotYet(f"{where} fails with {type(e).__name__} ({e}). Apply the same layers "
                     "in the same order as CopiedBlock.") from None
    if not isinstance(y, torch.Tensor):
        raise NotYet(f"{where} returns {type(y).__name__}, not a tensor: return the block's "
                     "output.")
    return y


def _forward_slip(y_mine: torch.Tensor, good: nn.Module, x: torch.Tensor) -> str:
    """What a forward that gives `y_mine` instead of `good(x)` did, in words, for the slips
    the check can recognize from the output; never the whole forward."""
    with torch.no_grad():
        f, s = good.main_path(x), good.shortcut(x)
        slips = {
            "your block returns the sum F(x) + shortcut(x) with nothing after it: "
            "CopiedBlock's ReLU after the addition is not one of its mistakes": f + s,
            "a ReLU acts on what the shortcut carries (suspect 2): the shortcut must carry x, "
            "or its projection, unchanged": torch.relu(f + torch.relu(s)),
            "your branch ends in a ReLU before the addition, so F(x) can only raise a feature "
            "(notebook 00, Exercise 2); CopiedBlock's last ReLU comes after the addition, and "
            "that is not one of its mistakes": torch.relu(f) + s,
            "the shortcut is missing from your output: nothing is added to the branch, as in "
            "a plain block": torch.relu(f),
        }
    for words, output in slips.items():
        if output.shape == y_mine.shape and torch.allclose(y_mine, output, atol=1e-5):
            return words + "."
    return ("compare your forward with CopiedBlock's, line by line: only its four mistakes "
            "need fixing, and the order of its layers, its ReLUs and its addition is not among "
            "them.")


def _compare_with_good_block(mine: nn.Module, block, cin: int, cout: int,
                             stride: int) -> None:
    """Copy a GoodBlock's weights into `mine`; the same output and the same input
    gradient, in train mode, or NotYet saying what differs."""
    case = f"block({cin}, {cout}, {stride})"
    torch.manual_seed(0)
    good = GoodBlock(cin, cout, stride)
    theirs, ours = good.state_dict(), mine.state_dict()
    extra = [k for k in ours if k not in theirs]
    missing = [k for k in theirs if k not in ours]
    if extra or missing:
        raise NotYet(f"{case}'s weights are not named like the block you fix "
                     f"(extra: {', '.join(extra) or 'none'}; missing: "
                     f"{', '.join(missing) or 'none'}): keep {', '.join(FIX_NAMES)}, so that "
                     "the check can copy a correct block's weights into it.")
    wrong_shape = [k for k in theirs if ours[k].shape != theirs[k].shape]
    if wrong_shape:
        raise NotYet(f"{case}'s {wrong_shape[0]} has shape {tuple(ours[wrong_shape[0]].shape)}, "
                     f"a correct block's {tuple(theirs[wrong_shape[0]].shape)}: compare the "
                     "layer's channels, kernel size and stride with CopiedBlock's.")
    mine.load_state_dict(theirs)
    good.train(), mine.train()
    x = torch.randn(4, cin, 8, 8)
    x_good, x_mine = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_good = good(x_good)
    y_mine = _run(mine, x_mine, case, block)
    if tuple(y_mine.shape) != tuple(y_good.shape):
        raise NotYet(f"{case} maps {tuple(x.shape)} to {tuple(y_mine.shape)}, a correct block "
                     f"to {tuple(y_good.shape)}.")
    if not torch.allclose(y_mine, y_good, atol=1e-5):
        raise NotYet(f"with a correct block's weights, {case}'s output differs from it (max "
                     f"difference {float((y_mine - y_good).detach().abs().max()):.2g}): "
                     f"{_forward_slip(y_mine.detach(), good, x)}")
    y_good.square().sum().backward()
    if not y_mine.requires_grad:
        raise NotYet(f"{case}'s output is not connected to the autograd graph: does forward "
                     "run under torch.no_grad() or detach the result?")
    y_mine.square().sum().backward()
    if x_mine.grad is None or not torch.allclose(x_mine.grad, x_good.grad, atol=1e-4,
                                                 rtol=1e-4):
        raise NotYet(f"{case} computes the right output, but the gradient that reaches x is "
                     "not a correct block's: is the shortcut's path cut out of the autograd "
                     "graph (suspect 10)? Add x itself, not a detached copy.")


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
    """Exercise 1: a fix of `bugs.CopiedBlock`, written from it (not GoodBlock, the library's
    or torchvision's blocks, or a wrapper around them), checked against `GoodBlock` with
    copied weights (output and input gradient) and with `diagnose` on a TinyResNet of it."""
    with one_thread():
        return _check_fixed_block(block)


def _check_fixed_block(block: Callable[[int, int, int], nn.Module]) -> str:
    built = [(_build(block, *case), case) for case in FIX_CASES]
    for mine, case in built:
        _judge_fixed_shortcut(mine, *case)
    for mine, case in built:
        _compare_with_good_block(mine, block, *case)
    report = _no_findings(block, "")
    return ("with a BasicBlock's weights your block gives its output and its gradient, and "
            f"diagnose finds nothing in a net of {len(report.blocks)} of them.")
