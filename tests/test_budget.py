"""Training to a time budget: the plan (pure arithmetic on measured speeds), and `fit` following
it, storing it in the checkpoint and resuming it. Speeds are faked where the plan must be
known in advance; nothing here asserts how long anything took."""

import dataclasses

import pytest
import torch

from resnet_edu import budget as budget_module
from resnet_edu import train as train_module
from resnet_edu.budget import Speed, epoch_seconds, parse_budget, plan_epochs
from resnet_edu.data import load_sample
from resnet_edu.recipe import build_model, preset, train_resolution
from resnet_edu.train import fit

SPEED = Speed(step_s_min=0.5, step_s_full=1.0, min_resolution=24, eval_s_per_image=1e-3)


def _plan(budget_s, config, **kw):
    return plan_epochs(budget_s, SPEED, steps_per_epoch=10, batch_size=config.batch_size,
                       train_images=2560, eval_images=1000,
                       resolution=lambda e, n: train_resolution(
                           e, dataclasses.replace(config, epochs=n)), **kw)


def test_the_plan_is_the_most_epochs_that_fit():
    config = preset("cpu")
    plan = _plan(60.0, config)
    cost = [sum(epoch_seconds(SPEED, train_resolution(e, dataclasses.replace(config, epochs=n)),
                              10, 1000) for e in range(n)) for n in (plan.epochs,
                                                                     plan.epochs + 1)]
    assert cost[0] <= 60.0 < cost[1]
    assert plan.expected_s == pytest.approx(cost[0])
    assert plan.fits
    assert _plan(120.0, config).epochs > plan.epochs  # more time, more epochs
    # full-size steps cost twice the smallest: a run of all full-size epochs plans fewer
    assert _plan(60.0, dataclasses.replace(config, min_resolution=32)).epochs < plan.epochs


def test_a_step_costs_in_proportion_to_the_crop_area():
    assert SPEED.step_s(24) == 0.5
    assert SPEED.step_s(32) == 1.0
    assert SPEED.step_s(28) == pytest.approx(0.5 + 0.5 * (28**2 - 24**2) / (32**2 - 24**2))
    assert SPEED.scaled(2.0).step_s(32) == 2.0


def test_spent_time_and_done_epochs_count():
    config = preset("cpu")
    fresh = _plan(60.0, config)
    later = _plan(60.0, config, done_epochs=1, spent_s=30.0)
    assert later.epochs < fresh.epochs
    assert later.epochs >= 1


def test_a_budget_too_small_for_one_epoch_trains_one_and_says_so():
    plan = _plan(1.0, preset("cpu"))
    assert plan.epochs == 1 and not plan.fits
    assert "over the budget" in plan.describe()


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600.0), ("90s", 90.0), ("600", 600.0),
                                               ("1.5h", 5400.0), (" 3 min", 180.0),
                                               ("none", None)])
def test_budget_text(text, seconds):
    assert parse_budget("--budget", text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "-5m", "0", "inf", "nan", "5x"])
def test_bad_budget_text_says_what_is_expected(text):
    with pytest.raises(ValueError, match=r"--budget must be a positive time such as 10m"):
        parse_budget("--budget", text)


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_s"):
        preset("smoke", budget_s=0.0)


@pytest.fixture
def fixed_speed(monkeypatch):
    """`fit` plans with this speed instead of measuring, and never re-plans."""
    monkeypatch.setattr(train_module, "measure_speed", lambda *a, **k: SPEED)
    monkeypatch.setattr(train_module, "REPLAN_DRIFT", float("inf"))


def _budget_run(budget_s):
    return preset("smoke", budget_s=budget_s, train_subset=128, batch_size=64, epochs=9)


def _model(config):
    torch.manual_seed(0)
    return build_model(config)


def test_fit_trains_the_planned_epochs_and_stores_the_plan(fixed_speed, tmp_path):
    data = load_sample()
    config = _budget_run(5.0)  # 2 steps per epoch at 1 s each (full size), and the evaluation
    history = fit(_model(config), data, config, out_dir=tmp_path, progress=False,
                  verbose=False)
    expected = plan_epochs(5.0, SPEED, steps_per_epoch=2, batch_size=64, train_images=128,
                           eval_images=len(data.val), spent_s=0.0,
                           resolution=lambda e, n: 32)
    assert expected.epochs == 2
    assert len(history.epochs) == history.config["epochs"] == expected.epochs != config.epochs
    assert history.config["plan"].startswith("2 epochs of 128 images at about 64 img/s")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["planned_epochs"] == expected.epochs
    assert state["config"]["budget_s"] == 5.0  # the recipe as asked for, for resume checks


def test_a_resumed_budget_run_finishes_the_planned_schedule(fixed_speed, tmp_path,
                                                           monkeypatch):
    data = load_sample()
    config = _budget_run(5.0)
    whole_model = _model(config)
    whole = fit(whole_model, data, config, progress=False, verbose=False)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(history):
        raise Stop

    with pytest.raises(Stop):
        fit(_model(config), data, config, out_dir=tmp_path, progress=False,
            verbose=False, callbacks=[stop_after_first_epoch])
    # a slower machine now: a fresh plan would be shorter, the resumed run must not re-plan
    monkeypatch.setattr(train_module, "measure_speed", lambda *a, **k: SPEED.scaled(10))
    model = build_model(config)  # its weights come from the checkpoint
    resumed = fit(model, data, config, out_dir=tmp_path, progress=False, verbose=False)
    assert len(resumed.epochs) == len(whole.epochs) == whole.config["epochs"] == 2
    for name, tensor in whole_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_first_epoch_far_from_the_plan_re_plans_once(monkeypatch):
    # the plan claims a step costs a microsecond; the real first epoch is far slower
    fast = Speed(step_s_min=1e-6, step_s_full=1e-6, min_resolution=32, eval_s_per_image=1e-9)
    monkeypatch.setattr(train_module, "measure_speed", lambda *a, **k: fast)
    data = load_sample()
    config = _budget_run(3.0)
    history = fit(_model(config), data, config, progress=False, verbose=False)
    assert "replanned_after_epoch_1" in history.config
    assert history.config["epochs"] < budget_module.MAX_EPOCHS  # not the first, absurd plan
    assert len(history.epochs) == history.config["epochs"]
