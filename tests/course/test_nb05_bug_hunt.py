"""The bug-hunt checks: pass right answers, give specific feedback on each wrong one."""

from __future__ import annotations

import torch
from torch import nn

from resnet_edu.course import suspects
from resnet_edu.course.nb05_bug_hunt import (
    CLAIMS,
    accuracy_oracle,
    accuracy_setup,
    check_accuracy,
    check_claims,
    check_crash_prediction,
    check_fixed_block,
    check_stem_prediction,
    claim_evidence,
    crashing_blocks,
    first_block_side,
)
from resnet_edu.diagnostics import diagnose


def unattempted(*args):
    raise NotImplementedError


def right_accuracy(model, loader):
    was = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    model.train(was)
    return correct / total


def _counting(model, loader, percent=False, per_batch=False, grad=False, restore="was"):
    was = model.training
    model.eval()
    accs, correct, total = [], 0, 0
    with torch.set_grad_enabled(grad):
        for images, labels in loader:
            hits = int((model(images).argmax(1) == labels).sum())
            accs.append(hits / len(labels))
            correct, total = correct + hits, total + len(labels)
    if restore == "was":
        model.train(was)
    elif restore == "train":
        model.train()
    value = sum(accs) / len(accs) if per_batch else correct / total
    return 100 * value if percent else value


def test_accuracy_oracle_counts_images_not_batches():
    model, loader = accuracy_setup()
    want, batch_mean = accuracy_oracle(model, loader)
    assert [len(y) for _, y in loader] == [16, 16, 16, 2]
    assert want == 33 / 50 and want != batch_mean  # every third image is labelled wrong


def test_accuracy_passes_and_each_slip_gets_its_hint():
    assert check_accuracy(right_accuracy)
    assert "not attempted" in check_accuracy(lambda m, loader: None).message
    assert "not attempted" in check_accuracy(unattempted).message
    cases = {
        "percentage": lambda m, ld: _counting(m, ld, percent=True),
        "last batch holds only 2": lambda m, ld: _counting(m, ld, per_batch=True),
        "no_grad": lambda m, ld: _counting(m, ld, grad=True),
        "left in eval": lambda m, ld: _counting(m, ld, restore=None),
        "not always train": lambda m, ld: _counting(m, ld, restore="train"),
        "one number": lambda m, ld: [0.5],
    }
    for hint, answer in cases.items():
        fb = check_accuracy(answer)
        assert not fb and hint in fb.message, (hint, fb.message)

    def train_mode(model, loader):  # forgets eval: BatchNorm's running statistics change
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
        return correct / len(loader.dataset)

    fb = check_accuracy(train_mode)
    assert not fb and "running statistics" in fb.message

    def dropout_on(model, loader):  # BatchNorm in eval mode, but Dropout left on
        model.eval()
        model[5].train()
        correct = 0
        with torch.no_grad():
            for x, y in loader:
                correct += int((model(x).argmax(1) == y).sum())
        model.train()
        return correct / len(loader.dataset)

    fb = check_accuracy(dropout_on)
    assert not fb and "Dropout" in fb.message, fb.message


def _eval_counting(divide_by):
    def answer(model, loader):  # eval mode, no autograd, mode restored: only the count is off
        was = model.training
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in loader:
                correct += int((model(images).argmax(1) == labels).sum())
        model.train(was)
        return divide_by(correct, loader)
    return answer


def test_accuracy_slips_in_eval_mode_get_their_own_hint_not_the_train_mode_one():
    cases = {  # issue 28: a wrong denominator was told about train mode
        "4 batches times a batch size of 16": _eval_counting(
            lambda c, ld: c / (len(ld) * ld.batch_size)),
        "the number of batches": _eval_counting(lambda c, ld: c / len(ld)),
        "is the number of images classified right: return the fraction": _eval_counting(
            lambda c, ld: c),
    }
    for hint, answer in cases.items():
        fb = check_accuracy(answer)
        assert not fb and hint in fb.message, (hint, fb.message)
        assert "train mode" not in fb.message and "Dropout" not in fb.message

    def argmin(model, loader):
        was = model.training
        model.eval()
        with torch.no_grad():
            right = sum(int((model(x).argmin(1) == y).sum()) for x, y in loader)
        model.train(was)
        return right / len(loader.dataset)

    fb = check_accuracy(argmin)
    assert not fb and "largest score" in fb.message and "train mode" not in fb.message


def test_accuracy_refuses_the_library_and_explains_errors_in_words():
    from resnet_edu.course.nb05_bug_hunt import accuracy_oracle

    fb = check_accuracy(lambda model, loader: accuracy_oracle(model, loader)[0])
    assert not fb and "function of resnet_edu" in fb.message

    def per_batch_library(model, loader):  # the library's evaluate_correctly on each batch
        right = sum(int((suspects.evaluate_correctly(model, x) == y).sum()) for x, y in loader)
        return right / len(loader.dataset)

    fb = check_accuracy(per_batch_library)
    assert not fb and "function of resnet_edu" in fb.message

    def compares_scores(model, loader):  # forgets argmax: (B, 10) against (B,)
        model.eval()
        with torch.no_grad():
            return sum(int((model(x) == y).sum()) for x, y in loader) / len(loader.dataset)

    fb = check_accuracy(compares_scores)
    assert not fb and "running your answer raised" not in fb.message
    assert "(B, 10) scores" in fb.message and "labels of shape (B,)" in fb.message


def test_claims_match_measurement_and_feedback_names_the_wrong_claim():
    truth = claim_evidence()
    assert truth == {"relu_shortcut_keeps_gradient": False, "log_softmax_same_loss": True,
                     "dropout_eval_identity": True, "bias_removable_after_training": False,
                     "zero_gamma_stops_conv_gradient": True}
    assert check_claims(truth)
    for key, hint in (("relu_shortcut_keeps_gradient", "negative"),
                      ("log_softmax_same_loss", "harmless"),
                      ("dropout_eval_identity", "1/(1-p)"),
                      ("bias_removable_after_training", "running mean"),
                      ("zero_gamma_stops_conv_gradient", "gamma = 0")):
        fb = check_claims(dict(truth, **{key: not truth[key]}))
        assert not fb and CLAIMS[key] in fb.message and hint in fb.message, fb.message
    fb = check_claims({k: not v for k, v in truth.items()})
    assert not fb and f"{len(CLAIMS) - 1} more" in fb.message
    assert "give True or False" in check_claims({}).message
    assert "give True or False" in check_claims({k: ... for k in CLAIMS}).message
    assert not check_claims(["no"])


def test_claims_oracle_by_hand():
    """The claims' truths, derived independently of claim_evidence's measurements."""
    z = torch.tensor([[1.0, 2.0, 3.0]])
    y = torch.tensor([2])
    assert torch.allclose(nn.functional.cross_entropy(z, y),
                          nn.functional.cross_entropy(z.log_softmax(1), y))
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    torch.relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0]  # the negative entry's gradient is cut


def test_crash_prediction_is_the_stride_one_block():
    assert crashing_blocks() == ["layers.0.0"]  # measured: the blocks run one by one
    assert crashing_blocks(suspects.GoodBlock) == []
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

    class InPlaceSum(FixedBlock):  # in-place ops on the sum are fine: x itself is not touched
        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            out += self.shortcut(x)
            return torch.relu_(out)

    assert check_fixed_block(InPlaceSum)
    assert "not attempted" in check_fixed_block(unattempted).message

    fb = check_fixed_block(suspects.CopiedBlock)  # the first of its four mistakes
    assert not fb and "bias=False" in fb.message and "conv1, conv2" in fb.message

    def shortcut_variant(shortcut):
        class Variant(FixedBlock):
            def __init__(self, cin, cout, stride=1):
                super().__init__(cin, cout, stride)
                self.shortcut = shortcut(cin, cout, stride)
        return Variant

    def projection(cin, cout, stride, *after, conv_stride=None):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, conv_stride or stride, bias=False),
                             nn.BatchNorm2d(cout), *after)

    # the shortcut mistakes get the verdict of the one shortcut rule, as in notebook 03
    hints = {
        "return None (the identity) here": lambda i, o, s: projection(i, o, s),  # option C
        "must stay linear": lambda i, o, s: nn.Sequential() if (i, s) == (o, 1) else
        projection(i, o, s, nn.ReLU()),
        "give the 1x1 conv the block's stride": lambda i, o, s: nn.Sequential()
        if (i, s) == (o, 1) else projection(i, o, s, conv_stride=1),
        "no BatchNorm after its conv": lambda i, o, s: nn.Sequential() if (i, s) == (o, 1)
        else nn.Conv2d(i, o, 1, s, bias=False),
    }
    for hint, shortcut in hints.items():
        fb = check_fixed_block(shortcut_variant(shortcut))
        assert not fb and hint in fb.message, (hint, fb.message)

    from resnet_edu.shortcuts import ZeroPadShortcut

    fb = check_fixed_block(shortcut_variant(  # option A: fine in general, not this exercise
        lambda i, o, s: nn.Sequential() if (i, s) == (o, 1) else ZeroPadShortcut(i, o, s)))
    assert not fb and "option A" in fb.message and "option B" in fb.message

    class Detached(FixedBlock):
        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + self.shortcut(x.clone().detach()))

    fb = check_fixed_block(Detached)
    assert not fb and "detached copy" in fb.message and "suspect 10" in fb.message

    class NoFinalRelu(FixedBlock):
        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return self.bn2(self.conv2(out)) + self.shortcut(x)

    fb = check_fixed_block(NoFinalRelu)
    assert not fb and "output differs" in fb.message and "nothing after it" in fb.message

    class MainPathWithoutStride(FixedBlock):  # the shortcut is right: diagnose names the clash
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            self.conv1.stride = (1, 1)

    fb = check_fixed_block(MainPathWithoutStride)
    assert not fb and "fails on a (4, 16, 8, 8) input" in fb.message
    assert "diagnose finds [shape-mismatch]" in fb.message

    class Renamed(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            self.first = self.__dict__["_modules"].pop("conv1")

        def forward(self, x):
            out = torch.relu(self.bn1(self.first(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    fb = check_fixed_block(Renamed)
    assert not fb and "keep conv1" in fb.message


class DownsampleBlock(nn.Module):
    """Right, but the shortcut is called `downsample` (torchvision's name), None if identity."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def test_fixed_block_refuses_the_answer_it_is_compared_with():
    """Issue 28: GoodBlock, imported at the top of the notebook, or a subclass got 'Correct!'."""
    from resnet_edu.blocks import BasicBlock

    class Subclass(suspects.GoodBlock):
        pass

    class Holder(nn.Module):
        def __init__(self, cin, cout, stride=1):
            super().__init__()
            self.inner = suspects.GoodBlock(cin, cout, stride)

        def forward(self, x):
            return self.inner(x)

    answers = {
        "GoodBlock:": suspects.GoodBlock,
        "Subclass, a subclass of GoodBlock": Subclass,
        "is (or holds) GoodBlock": lambda i, o, s: suspects.GoodBlock(i, o, s),  # a wrapper
        "holds) GoodBlock": Holder,
        "BasicBlock": lambda i, o, s: BasicBlock(i, o, s),  # the library's own
        "DetachedShortcutBlock": suspects.DetachedShortcutBlock,  # a suspect is built on it too
    }
    for hint, answer in answers.items():
        fb = check_fixed_block(answer)
        assert not fb and hint in fb.message and "yourself" in fb.message, (hint, fb.message)


def test_fixed_block_hints_in_words_never_a_raw_error():
    fb = check_fixed_block(DownsampleBlock)  # issue 28: was told BN's beta is a conv bias
    assert not fb and "bias" not in fb.message
    assert "no attribute `shortcut` (yours: downsample)" in fb.message

    class TwoArguments(FixedBlock):
        def __init__(self, cin, cout):
            super().__init__(cin, cout, 1)

    class Forgetful(FixedBlock):  # suspect 1's mistake
        def forward(self, x):
            if self.stride != 1:
                return x
            return super().forward(x)

    class ReturnsNothing(FixedBlock):
        def forward(self, x):
            self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    class LateSuper(nn.Module):  # suspect 6b's mistake
        def __init__(self, cin, cout, stride=1):
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            super().__init__()

    class BadView(FixedBlock):
        def forward(self, x):
            return super().forward(x).view(3, -1)

    cases = {
        TwoArguments: "__init__ must take (in_channels, out_channels, stride=1)",
        Forgetful: "reads an attribute that __init__ never set",
        ReturnsNothing: "returns NoneType, not a tensor",
        LateSuper: "before `super().__init__()` has run",
        BadView: "Apply the same layers in the same order as CopiedBlock",
    }
    for answer, hint in cases.items():
        fb = check_fixed_block(answer)
        assert not fb and hint in fb.message, (answer.__name__, fb.message)
        assert "running your answer raised" not in fb.message


def test_suspects_are_the_planted_mistakes():
    assert suspects.SUSPECTS[1] is suspects.ForgetfulBlock
    assert suspects.SUSPECTS[8] is suspects.predict_classes
    assert suspects.evaluate_forgetting_eval is suspects.predict_classes
    names = {getattr(s, "__name__", "") for s in suspects.SUSPECTS.values()
             if not isinstance(s, tuple)}
    assert set(suspects.PLANTED) - {"ReluShortcutBlock"} <= names
    report = diagnose(suspects.TinyResNet(suspects.CopiedBlock, depth=2), (3, 32, 32))
    assert {"bias-before-norm", "unneeded-projection", "shortcut-activation"} <= set(report.checks)


def test_stem_prediction_is_measured_and_names_the_max_pool():
    assert first_block_side(96) == 24 and first_block_side(64) == 16  # 4x down: conv + pool
    assert check_stem_prediction(24)
    assert "max-pool" in check_stem_prediction(48).message
    assert "own size" in check_stem_prediction(96).message
    assert not check_stem_prediction(8)
    assert "first" in check_stem_prediction(...).message
    assert "one number" in check_stem_prediction("24x24").message
    assert check_stem_prediction(16, side=64)


def _forward_variant(forward):
    class Variant(FixedBlock):
        pass

    Variant.forward = forward
    return Variant


def test_fixed_block_forward_slips_are_named_not_answered():
    def branch(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    cases = {
        "with nothing after it": lambda self, x: branch(self, x) + self.shortcut(x),
        "a ReLU acts on what the shortcut carries (suspect 2)":
            lambda self, x: torch.relu(branch(self, x) + torch.relu(self.shortcut(x))),
        "ends in a ReLU before the addition":
            lambda self, x: torch.relu(branch(self, x)) + self.shortcut(x),
        "the shortcut is missing": lambda self, x: torch.relu(branch(self, x)),
        "compare your forward with CopiedBlock's":  # BatchNorm after the addition
            lambda self, x: torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))
                                                 + self.shortcut(x))),
    }
    for hint, forward in cases.items():
        fb = check_fixed_block(_forward_variant(forward))
        assert not fb and "output differs" in fb.message and hint in fb.message, fb.message
        assert "bn2(conv2(" not in fb.message  # the slip, not the whole forward


def test_accuracy_of_one_batch_and_a_failing_library_call_get_their_own_hint():
    def last_batch_only(model, loader):
        was = model.training
        model.eval()
        with torch.no_grad():
            for x, y in loader:
                acc = (model(x).argmax(1) == y).float().mean().item()
        model.train(was)
        return acc

    fb = check_accuracy(last_batch_only)
    assert not fb and "the accuracy of the last batch alone" in fb.message, fb.message
    assert "divided by" not in fb.message

    from resnet_edu.evaluation import evaluate

    fb = check_accuracy(lambda model, loader: evaluate(model, loader.dataset)["acc"])
    assert not fb and "function of resnet_edu" in fb.message, fb.message


def test_claims_given_as_text_are_told_to_drop_the_quotes():
    fb = check_claims({k: "True" for k in CLAIMS})
    assert not fb and "without quotes" in fb.message
