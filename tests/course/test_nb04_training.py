"""The checks of notebook 04's exercises (the training epoch, which parameters get weight decay,
the one-cycle schedule) and its loss-floor prediction: the solutions pass, each typical wrong
answer gets its own hint in the notebook's words, an unanswered cell is "not attempted"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_edu.course.nb04_training import (
    ONE_CYCLE_CASES,
    check_loss_floor_prediction,
    check_one_cycle,
    check_split_parameters,
    check_train_one_epoch,
    epoch_parts,
    fit_one_epoch,
    parameter_kinds,
)
from resnet_edu.recipe import smoothed_loss_floor


def right(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()


def no_zero_grad(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        criterion(model(x), y).backward()
        optimizer.step()
        scheduler.step()


def no_train_mode(model, loader, optimizer, scheduler, criterion):
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        scheduler.step()


def schedule_per_epoch(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
    scheduler.step()


def schedule_before_step(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        scheduler.step()
        optimizer.step()


def zero_grad_after_backward(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        criterion(model(x), y).backward()
        optimizer.zero_grad()
        optimizer.step()
        scheduler.step()


def own_loss(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()  # without the recipe's label smoothing
        optimizer.step()
        scheduler.step()


def no_step(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()


def one_batch(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()
        scheduler.step()
        break


def doubled_loss(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        (2 * criterion(model(x), y)).backward()
        optimizer.step()
        scheduler.step()


def unanswered(model, loader, optimizer, scheduler, criterion):
    ...


def test_the_solution_matches_fit():
    fb = check_train_one_epoch(right)
    assert fb, fb.message
    assert "8 steps" in fb.message


def test_the_parts_are_fit_s():
    """Oracle: the solution's loop over `epoch_parts` gives fit's weights, bit for bit here."""
    parts = epoch_parts()
    assert not parts.model.training and len(parts.loader) == 8
    right(parts.model, parts.loader, parts.optimizer, parts.scheduler, parts.criterion)
    oracle = fit_one_epoch()
    theirs = oracle.state_dict()
    for name, value in parts.model.state_dict().items():
        assert (value - theirs[name]).abs().max() <= 1e-6, name


@pytest.mark.parametrize("answer, hint", [
    (no_zero_grad, "zero_grad() in every iteration"),
    (no_train_mode, "model.train()"),
    (schedule_per_epoch, "once per epoch"),
    (schedule_before_step, "after optimizer.step(), not before"),
    (zero_grad_after_backward, "gradients were zero"),
    (own_loss, "criterion"),
    (no_step, "never called optimizer.step()"),
    (one_batch, "1 optimizer steps for 8 batches"),
    (doubled_loss, "differ from fit's"),
    (unanswered, "not attempted"),
], ids=lambda v: getattr(v, "__name__", "hint"))
def test_each_mistake_gets_its_hint(answer, hint):
    fb = check_train_one_epoch(answer)
    assert not fb and hint in fb.message, fb.message


def test_loss_floor_prediction():
    floor = smoothed_loss_floor(0.2, 10)
    assert round(floor, 3) == 0.867
    assert check_loss_floor_prediction(floor, 0.2)
    assert check_loss_floor_prediction(0.9, 0.2)  # within 5 %
    fb = check_loss_floor_prediction(0.0, 0.2)
    assert not fb and "too low" in fb.message and "entropy" in fb.message
    assert "too high" in check_loss_floor_prediction(2.3, 0.2).message
    assert "first" in check_loss_floor_prediction(..., 0.2).message
    assert check_loss_floor_prediction(smoothed_loss_floor(0.1, 10), 0.1)  # the smoke preset's


def test_loss_floor_prediction_speaks_of_a_computed_floor():
    fb = check_loss_floor_prediction(0.0, 0.2)
    assert "computed from the targets" in fb.message and "measurement" not in fb.message
    assert "number" in check_loss_floor_prediction("low", 0.2).message


def test_own_loss_hint_names_the_given_smoothing():
    fb = check_train_one_epoch(own_loss)
    assert not fb and "label smoothing, 0.1, as printed above" in fb.message, fb.message


# --- Exercise 3: the one-cycle schedule ----------------------------------------------------

def one_cycle_right(step, total, peak, frac):
    warm = round(frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1 - (step - warm) / max(1, total - warm - 1))


def one_cycle_other_form(step, total, peak, frac):
    """The same rule written another way: a line through two points per phase."""
    warm = round(frac * total)
    if step < warm:
        return peak / warm + (peak - peak / warm) * step / max(1, warm - 1)
    last = total - 1
    return peak * (last - step) / (last - warm)


def starts_at_zero(step, total, peak, frac):
    warm = round(frac * total)
    if step < warm:
        return peak * step / warm
    return peak * (1 - (step - warm) / max(1, total - warm - 1))


def ends_above_zero(step, total, peak, frac):
    warm = round(frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1 - (step - warm) / (total - warm))


def truncates_warmup(step, total, peak, frac):
    warm = int(frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1 - (step - warm) / max(1, total - warm - 1))


def divides_by_warm_always(step, total, peak, frac):
    warm = round(frac * total)
    up = peak * (step + 1) / warm
    return up if step < warm else peak * (1 - (step - warm) / max(1, total - warm - 1))


def cosine_decay(step, total, peak, frac):
    import math

    warm = round(frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm - 1)))


def skips_the_peak(step, total, peak, frac):
    warm = round(frac * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1 - (step - warm + 1) / (total - warm))


def peaks_one_step_late(step, total, peak, frac):
    warm = round(frac * total)
    if step < warm:
        return peak * (step + 1) / (warm + 1)
    return peak * (1 - (step - warm) / max(1, total - warm - 1))


def returns_a_list(step, total, peak, frac):
    return [one_cycle_right(step, total, peak, frac)]


def one_cycle_unanswered(step, total, peak, frac):
    raise NotImplementedError


def test_one_cycle_accepts_the_rule_written_two_ways():
    assert check_one_cycle(one_cycle_right)
    assert check_one_cycle(one_cycle_other_form)
    assert check_one_cycle(lambda *a: torch.tensor(one_cycle_right(*a)))  # a 0-d tensor


@pytest.mark.parametrize("answer, hint", [
    (starts_at_zero, "step 0 ran at rate 0"),
    (ends_above_zero, "the last step, step 99, should be at 0"),
    (truncates_warmup, "rounded to 4, not truncated"),
    (divides_by_warm_always, "no warm-up steps (warm = 0)"),
    (cosine_decay, "the decay should be linear"),
    (skips_the_peak, "step 20, should be at peak_lr"),
    (peaks_one_step_late, "the last warm-up step, step 19, should be at peak_lr"),
    (returns_a_list, "return a number, got list"),
    (one_cycle_unanswered, "not attempted"),
], ids=lambda v: getattr(v, "__name__", "hint"))
def test_one_cycle_names_each_wrong_decision(answer, hint):
    fb = check_one_cycle(answer)
    assert not fb and hint in fb.message, fb.message
    assert "Error:" not in fb.message and "raised" not in fb.message  # the notebook's words


def test_one_cycle_refuses_the_library_schedule():
    from resnet_edu.recipe import TrainConfig, lr_at

    def wrapped(step, total, peak, warmup):
        return lr_at(step, total, TrainConfig(lr=peak, warmup=warmup, schedule="onecycle"))

    fb = check_one_cycle(wrapped)
    assert not fb and "calls lr_at" in fb.message

    def nested(step, total, peak, warmup):
        return (lambda: lr_at(step, total, TrainConfig(lr=peak, warmup=warmup)))()

    assert "calls lr_at" in check_one_cycle(nested).message


def test_one_cycle_cases_tell_round_from_int():
    assert any(round(f * t) != int(f * t) for t, _, f in ONE_CYCLE_CASES)
    assert any(round(f * t) == 0 for t, _, f in ONE_CYCLE_CASES)  # a schedule without warm-up


# --- Exercise 2: which parameters get weight decay -------------------------------------------

def split_right(model):
    decayed, not_decayed = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            mixes = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight"
            (decayed if mixes else not_decayed).append(p)
    return decayed, not_decayed


def split_by_ndim(model):
    return ([p for p in model.parameters() if p.ndim > 1],
            [p for p in model.parameters() if p.ndim <= 1])


def split_by_weight_name(model):  # BatchNorm's gamma is called `weight` too
    named = list(model.named_parameters())
    return ([p for n, p in named if n.endswith("weight")],
            [p for n, p in named if not n.endswith("weight")])


def split_convs_only(model):  # forgets the linear layer
    convs = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    return ([p for p in model.parameters() if id(p) in convs],
            [p for p in model.parameters() if id(p) not in convs])


def split_conv_in_name(model):  # the shortcut's 1x1 conv is called downsample.0
    named = list(model.named_parameters())
    return ([p for n, p in named if "conv" in n or n == "fc.weight"],
            [p for n, p in named if not ("conv" in n or n == "fc.weight")])


def split_by_resnet_names(model):  # right on ResNet-18, wrong on a net named 0.weight, ...
    named = list(model.named_parameters())
    keep = [n for n, _ in named if "bn" not in n and "downsample.1" not in n
            and not n.endswith("bias")]
    return ([p for n, p in named if n in keep], [p for n, p in named if n not in keep])


def split_decays_biases(model):  # "no bias decay" forgotten for the linear bias
    decayed = [p for p in model.parameters() if p.ndim > 1]
    decayed += [m.bias for m in model.modules() if isinstance(m, nn.Linear)]
    ids = {id(p) for p in decayed}
    return decayed, [p for p in model.parameters() if id(p) not in ids]


def split_decays_beta(model):
    shifts = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    decayed = [p for p in model.parameters() if p.ndim > 1 or id(p) in shifts]
    return decayed, [p for p in model.parameters() if not (p.ndim > 1 or id(p) in shifts)]


def split_everything(model):
    return list(model.parameters()), []


def split_swapped(model):
    return split_right(model)[::-1]


def split_named_pairs(model):
    named = list(model.named_parameters())
    return [(n, p) for n, p in named if p.ndim > 1], [(n, p) for n, p in named if p.ndim <= 1]


def split_in_both(model):
    return list(model.parameters()), [p for p in model.parameters() if p.ndim <= 1]


def split_forgets_some(model):
    return [p for p in model.parameters() if p.ndim > 1], [model.fc.bias]


def split_wrapper(model):
    from resnet_edu.recipe import param_groups

    return tuple(g["params"] for g in param_groups(model, 5e-4))


def split_unanswered(model):
    ...


def test_split_accepts_two_right_rules():
    for answer in (split_right, split_by_ndim):
        fb = check_split_parameters(answer)
        assert fb and "21 weight tensors decayed" in fb.message, fb.message


@pytest.mark.parametrize("answer, hint", [
    (split_by_weight_name, "bn1.weight (4,) is a BatchNorm scale gamma"),
    (split_convs_only, "fc.weight (10, 32) is the linear layer's matrix"),
    (split_conv_in_name, "downsample.0.weight (8, 4, 1, 1) is the 1x1 conv kernel of a "
                         "shortcut"),
    (split_by_resnet_names, "on the check's second net"),
    (split_decays_biases, "fc.bias (10,) is a linear bias"),
    (split_decays_beta, "bn1.bias (4,) is a BatchNorm shift beta"),
    (split_everything, "should not be decayed"),
    (split_swapped, "the other way round"),
    (split_named_pairs, "(name, parameter) pairs"),
    (split_in_both, "is in both lists"),
    (split_forgets_some, "in neither list"),
    (split_wrapper, "calls param_groups"),
    (split_unanswered, "not attempted"),
], ids=lambda v: getattr(v, "__name__", "hint"))
def test_split_names_each_wrong_decision(answer, hint):
    fb = check_split_parameters(answer)
    assert not fb and hint in fb.message, fb.message
    assert "raised" not in fb.message  # a hint in the notebook's words, not an error


def test_split_hints_show_what_decay_does():
    """The hints measure what a wrong decision does: gamma and the linear matrix change the
    output by 10 % when shrunk by 10 %, a conv kernel in front of BatchNorm by nothing."""
    gamma = check_split_parameters(split_by_weight_name).message
    assert "by 10 %" in gamma and "by less than 0.01 %" in gamma
    assert "logits by 10 %" in check_split_parameters(split_convs_only).message
    assert "lr / |w|^2" in check_split_parameters(split_conv_in_name).message


def test_split_second_net_hint_names_its_parameter():
    fb = check_split_parameters(split_by_resnet_names)
    assert "1.weight (4,) is a BatchNorm scale gamma" in fb.message, fb.message


def test_parameter_kinds_table():
    from resnet_edu.models import resnet18_cifar

    rows = parameter_kinds(resnet18_cifar(width=16))
    kinds = {kind: count for kind, count, _, _ in rows}
    assert kinds == {"conv kernel": 17, "BatchNorm scale (gamma)": 20,
                     "BatchNorm shift (beta)": 20, "shortcut conv kernel (1x1)": 3,
                     "linear matrix": 1, "linear bias": 1}
    assert sum(kinds.values()) == len(list(resnet18_cifar(width=16).parameters()))


# --- issue 28, point 7: slips a student makes, each with a hint in the notebook's words ---------

def under_no_grad(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        with torch.no_grad():
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()


def backward_on_item(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(model(x), y).item().backward()
        optimizer.step()
        scheduler.step()


def criterion_arguments_swapped(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        criterion(y, model(x)).backward()
        optimizer.step()
        scheduler.step()


def scheduler_given_the_loss(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step(loss)


def step_before_backward(model, loader, optimizer, scheduler, criterion):
    model.train()
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        optimizer.step()
        loss.backward()
        scheduler.step()


def the_trainer_s_step(model, loader, optimizer, scheduler, criterion):
    from resnet_edu.train import train_step

    model.train()
    for x, y in loader:
        train_step(model, optimizer, torch.amp.GradScaler("cuda", enabled=False), criterion,
                   x, y, torch.device("cpu"), None)
        scheduler.step()


@pytest.mark.parametrize("answer, hint", [
    (under_no_grad, "while autograd was not recording"),
    (backward_on_item, ".item() or float() turns the loss into a Python number"),
    (criterion_arguments_swapped, "the model's scores for the batch first"),
    (scheduler_given_the_loss, "takes no argument"),
    (step_before_backward, "optimizer.step() ran before loss.backward()"),
    (the_trainer_s_step, "run by a function of resnet_edu"),
], ids=lambda v: getattr(v, "__name__", "hint"))
def test_epoch_slips_get_words_not_a_raw_error(answer, hint):
    fb = check_train_one_epoch(answer)
    assert not fb and hint in fb.message, fb.message
    assert "running your answer raised" not in fb.message and "not attempted" not in fb.message


def test_the_trainer_s_own_epoch_loop_is_refused():
    import resnet_edu.train as trainer

    library_epoch = getattr(trainer, "train_one_epoch", None)
    if library_epoch is None:
        pytest.skip("this trainer has no epoch function of its own")

    def wrapper(model, loader, optimizer, scheduler, criterion):
        model.train()
        library_epoch(model, loader, optimizer, scheduler, criterion)

    fb = check_train_one_epoch(wrapper)
    assert not fb and "run by a function of resnet_edu" in fb.message, fb.message


def test_split_names_the_optimizer_groups_and_names_instead_of_parameters():
    def groups(model):
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        return [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}]

    def names(model):
        return ([n for n, p in model.named_parameters() if p.ndim > 1],
                [n for n, p in model.named_parameters() if p.ndim <= 1])

    fb = check_split_parameters(groups)
    assert not fb and "parameter groups" in fb.message
    fb = check_split_parameters(names)
    assert not fb and "the parameters' names" in fb.message


def test_one_cycle_accepts_a_numpy_number():
    import numpy as np

    def numpy_rate(step, total, peak, frac):
        return np.float32(one_cycle_right(step, total, peak, frac))

    assert check_one_cycle(numpy_rate)


def test_loss_floor_prediction_refuses_a_probability_or_one_term():
    for guess, hint in ((0.8, "1 - eps, a probability"), (0.82, "1 - eps + eps/K"),
                        (0.198, "the true class's term alone")):
        fb = check_loss_floor_prediction(guess, 0.2)
        assert not fb and hint in fb.message, (guess, fb.message)


def test_exercise_checks_reject_wrong_answers():
    from resnet_edu.course.nb04_training import check_one_cycle, check_split_parameters

    everything_decayed = check_split_parameters(lambda m: (list(m.parameters()), []))
    assert not everything_decayed and "should not be decayed" in everything_decayed.message
    no_warmup = check_one_cycle(lambda step, total, peak, warmup: peak * (1 - step / total))
    assert not no_warmup and "should be" in no_warmup.message
    assert not check_one_cycle(lambda *args: ...)  # not attempted: feedback, no exception
