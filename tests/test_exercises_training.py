"""The checks of notebook 04's training epoch and loss-floor prediction: the solution passes,
each typical mistake in an epoch gets its own hint, an unanswered cell is "not attempted"."""

from __future__ import annotations

import pytest
import torch.nn.functional as F

from resnet_edu.exercises.training import (
    check_loss_floor_prediction,
    check_train_one_epoch,
    epoch_parts,
    fit_one_epoch,
)
from resnet_edu.live import smoothed_loss_floor


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
    assert check_loss_floor_prediction(0.9, 0.2)  # within 10 %
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


def test_one_cycle_refuses_the_library_schedule():
    from resnet_edu.exercises.training import check_one_cycle
    from resnet_edu.recipe import TrainConfig, lr_at

    def wrapped(step, total, peak, warmup):
        return lr_at(step, total, TrainConfig(lr=peak, warmup=warmup, schedule="onecycle"))

    fb = check_one_cycle(wrapped)
    assert not fb and "calls lr_at" in fb.message

    def nested(step, total, peak, warmup):
        return (lambda: lr_at(step, total, TrainConfig(lr=peak, warmup=warmup)))()

    assert "calls lr_at" in check_one_cycle(nested).message

    def own(step, total, peak, warmup):
        warm = round(warmup * total)
        if step < warm:
            return peak * (step + 1) / warm
        return peak * (1 - (step - warm) / max(1, total - warm - 1))

    assert check_one_cycle(own)


def test_split_parameters_unanswered_is_not_attempted():
    from resnet_edu.exercises.training import check_split_parameters

    assert "not attempted" in check_split_parameters(lambda model: None).message
    fb = check_split_parameters(lambda model: [])
    assert not fb and "pair" in fb.message
