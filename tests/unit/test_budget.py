"""Training to a time budget: the plan (pure arithmetic on measured speeds), and `fit` following
it, storing it in the checkpoint and resuming it. Speeds are faked where the plan must be
known in advance; nothing here asserts how long anything took."""

import dataclasses

import pytest
import torch

from resnet_edu import budget as budget_module
from resnet_edu import train as train_module
from resnet_edu.budget import Pace, Speed, epoch_seconds, parse_budget, plan_epochs
from resnet_edu.data import load_sample
from resnet_edu.recipe import build_model, preset, train_resolution
from resnet_edu.train import fit

SPEED = Speed(step_s_min=0.5, step_s_full=1.0, min_resolution=24, eval_s_per_image=1e-3)


def _plan(budget_s, config, speed=SPEED, **kw):
    return plan_epochs(budget_s, speed, steps_per_epoch=10, batch_size=config.batch_size,
                       train_images=2560, eval_images=1000,
                       resolution=lambda e, n: train_resolution(
                           e, dataclasses.replace(config, epochs=n)), **kw)


def _cost(config, epochs, last_steps, speed=SPEED, eval_images=1000):
    sizes = [train_resolution(e, dataclasses.replace(config, epochs=epochs)) for e in range(epochs)]
    full = sum(epoch_seconds(speed, size, 10, eval_images) for size in sizes)
    return full - (10 - last_steps) * speed.step_s(sizes[-1])


def test_the_plan_is_the_most_steps_that_fit_the_last_epoch_cut_short():
    config = preset("cpu")
    plan = _plan(60.0, config)
    last = plan.steps - (plan.epochs - 1) * 10
    assert 1 <= last <= 10 and plan.fits
    assert plan.expected_s == pytest.approx(_cost(config, plan.epochs, last))
    assert plan.expected_s <= 60.0
    if last < 10:  # one more step of the last epoch would not fit
        assert _cost(config, plan.epochs, last + 1) > 60.0
        assert f"stops after {last} of its 10 steps" in plan.describe()
    assert _cost(config, plan.epochs + 1, 1) > 60.0  # nor would one more epoch
    assert _plan(120.0, config).steps > plan.steps  # more time, more steps
    # full-size steps cost twice the smallest: a run of all full-size epochs plans fewer
    assert _plan(60.0, dataclasses.replace(config, min_resolution=32)).steps < plan.steps


def test_the_plan_counts_the_evaluations_the_time_between_epochs_and_the_warm_up():
    config = preset("cpu")
    plain = _plan(60.0, config)
    # the evaluation passes of every epoch (flip TTA included in the measured per-image time)
    slower_eval = dataclasses.replace(SPEED, eval_s_per_image=3e-3)
    assert _plan(60.0, config, speed=slower_eval).steps < plain.steps
    # checkpoint and callbacks between epochs
    between = dataclasses.replace(SPEED, between_epochs_s=1.0)
    assert _plan(60.0, config, speed=between).steps < plain.steps
    # the run's start and each crop size not yet run pay their warm-up once
    warm_up = dataclasses.replace(SPEED, warmup_s=2.0)
    cold = _plan(60.0, config, speed=warm_up)
    sizes = {train_resolution(e, dataclasses.replace(config, epochs=plain.epochs))
             for e in range(plain.epochs)}
    assert cold.steps < _plan(60.0, config, speed=warm_up, warm=sizes).steps < plain.steps
    assert _plan(60.0, config, speed=warm_up, warm=sizes, done_epochs=1).steps == _plan(
        60.0, config, done_epochs=1).steps  # a re-plan: the start is behind
    # time spent before (start-up, data, probe) and kept back for after (the final test)
    assert _plan(60.0, config, spent_s=10.0).steps < plain.steps


def test_a_step_costs_in_proportion_to_the_crop_area():
    assert SPEED.step_s(24) == 0.5
    assert SPEED.step_s(32) == 1.0
    assert SPEED.step_s(28) == pytest.approx(0.5 + 0.5 * (28**2 - 24**2) / (32**2 - 24**2))
    assert SPEED.scaled(2.0).step_s(32) == 2.0


def test_spent_time_and_done_epochs_count():
    config = preset("cpu")
    fresh = _plan(60.0, config)
    later = _plan(60.0, config, done_epochs=1, spent_s=30.0)
    assert later.steps < fresh.steps
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
    monkeypatch.setattr(budget_module.Planner, "after_epoch", lambda self, done: None)
    monkeypatch.setattr(budget_module, "clock", lambda: 0.0)  # the plan's time: the speed's


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
    assert expected.epochs == 2 and expected.steps == 4
    assert len(history.epochs) == history.config["epochs"] == expected.epochs != config.epochs
    assert history.config["plan"].startswith("2 epochs of 128 images at about 64 img/s")
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["planned_epochs"] == expected.epochs
    assert state["planned_steps"] == expected.steps
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


# --- warm-up and drift, on a fake clock ---------------------------------------------------

def test_pace_does_not_take_the_warm_up_for_the_machine():
    pace = Pace(SPEED)  # 1 s per full-size step
    pace.observe(32, 5, 50.0)  # the first five steps: 10x slower (warm-up)
    for _ in range(3 * budget_module.DRIFT_WINDOWS):
        pace.observe(32, 10, 10.0)
    assert pace.drift() is None
    pace.observe(24, 5, 25.0)  # a new crop size warms up again
    assert pace.drift() is None


def test_pace_finds_a_drift_only_when_it_persists():
    pace = Pace(SPEED)
    pace.observe(32, 5, 5.0)
    for _ in range(budget_module.DRIFT_WINDOWS - 1):
        pace.observe(32, 10, 20.0)
    pace.observe(32, 10, 10.0)  # one window on time: no drift yet
    assert pace.drift() is None
    for _ in range(budget_module.DRIFT_WINDOWS - 1):
        pace.observe(32, 10, 20.0)
    assert pace.drift() is None  # not yet DRIFT_WINDOWS in a row
    pace.observe(32, 10, 20.0)
    assert pace.drift() == pytest.approx(2.0)
    pace.observe(32, 10, 100.0, count=False)  # an epoch's start: counts toward warm-up only
    assert pace.drift() == pytest.approx(2.0)


class FakeClock:
    """The planner's clock: it moves only when a training step runs, by `step_s(step)`."""

    def __init__(self, step_s):
        self.now, self.steps, self.step_s = 1000.0, 0, step_s

    def __call__(self):
        return self.now

    def step(self):
        self.now += self.step_s(self.steps)
        self.steps += 1


@pytest.fixture
def fake_clock(monkeypatch):
    flat = Speed(step_s_min=1.0, step_s_full=1.0, min_resolution=32, eval_s_per_image=0.0)
    monkeypatch.setattr(train_module, "measure_speed", lambda *a, **k: flat)

    def install(step_s, warmup_s=0.0):
        speed = dataclasses.replace(flat, warmup_s=warmup_s)
        monkeypatch.setattr(train_module, "measure_speed", lambda *a, **k: speed)
        clock = FakeClock(step_s)
        monkeypatch.setattr(budget_module, "clock", clock)
        real_step = train_module.train_step

        def timed_step(*args, **kwargs):
            clock.step()
            return real_step(*args, **kwargs)
        monkeypatch.setattr(train_module, "train_step", timed_step)
        return clock
    return install


def test_slow_first_steps_keep_the_plan(fake_clock, tmp_path):
    # the run's first 10 steps take 10x a later one (warm-up), as the probe measured
    fake_clock(lambda i: 10.0 if i < 10 else 1.0, warmup_s=90.0)
    config = preset("smoke", width=4, train_subset=512, batch_size=16, budget_s=300.0, tta=False)
    history = fit(_model(config), load_sample(), config, out_dir=tmp_path, eval_splits=(),
                  progress=False, verbose=False)
    assert not any(k.startswith("replanned") for k in history.config)
    assert len(history.epochs) == history.config["epochs"] == 7  # 210 s of 1-s steps
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["planned_steps"] < 7 * 32  # the last epoch cut short


def test_steps_that_stay_slow_re_plan(fake_clock):
    fake_clock(lambda i: 2.0)  # the machine runs at half the measured speed from the start
    config = preset("smoke", width=4, train_subset=512, batch_size=16, budget_s=300.0, tta=False)
    history = fit(_model(config), load_sample(), config, eval_splits=(), progress=False,
                  verbose=False)
    replanned = [k for k in history.config if k.startswith("replanned")]
    assert replanned and "2.00x the plan" in history.config[replanned[0]]
    assert len(history.epochs) == history.config["epochs"] < 10


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
