"""The bug-hunt checks: pass right answers, give specific feedback on each wrong one."""

from __future__ import annotations

import torch
from torch import nn

from resnet_edu.diagnostics import diagnose
from resnet_edu.exercises import bugs
from resnet_edu.exercises.bug_hunt import (
    CLAIMS,
    accuracy_oracle,
    accuracy_setup,
    check_accuracy,
    check_claims,
    check_crash_prediction,
    check_fixed_block,
    check_shortcut_for,
    check_stem_prediction,
    claim_evidence,
    crashing_blocks,
    first_block_side,
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
        # the shortcut mistakes get the verdict of the one shortcut rule, as in notebook 03
        bugs.AlwaysProjectBlock: "return None (the identity) here",
        bugs.ReluShortcutBlock: "must stay linear",
        bugs.StrideOneShortcutBlock: "must stay linear",
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
    assert not fb and "no BatchNorm after its conv" in fb.message

    class ShortcutWithoutStride(FixedBlock):
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            if len(self.shortcut):
                self.shortcut[0].stride = (1, 1)

    fb = check_fixed_block(ShortcutWithoutStride)
    assert not fb and "give the 1x1 conv the block's stride" in fb.message

    class MainPathWithoutStride(FixedBlock):  # the shortcut is right: diagnose names the clash
        def __init__(self, cin, cout, stride=1):
            super().__init__(cin, cout, stride)
            self.conv1.stride = (1, 1)

    fb = check_fixed_block(MainPathWithoutStride)
    assert not fb and "fails on a (4, 16, 8, 8) input" in fb.message
    assert "diagnose finds" in fb.message

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


def test_stem_prediction_is_measured_and_names_the_max_pool():
    assert first_block_side(96) == 24 and first_block_side(64) == 16  # 4x down: conv + pool
    assert check_stem_prediction(24)
    assert "max-pool" in check_stem_prediction(48).message
    assert "own size" in check_stem_prediction(96).message
    assert not check_stem_prediction(8)
    assert "first" in check_stem_prediction(...).message
    assert "one number" in check_stem_prediction("24x24").message
    assert check_stem_prediction(16, side=64)
