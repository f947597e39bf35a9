"""The training recipe as data: presets, schedules, resolution, weight-decay groups, the label-
smoothing floor, and the checks on every field."""

import dataclasses
import itertools
import re

import pytest
import torch
from torch import nn

from resnet_edu.recipe import (
    PRESETS,
    TrainConfig,
    choose_preset,
    lr_at,
    param_groups,
    preset,
    train_resolution,
)

from helpers import TINY, tiny_model


def test_presets_are_frozen_and_validated():
    assert {"gpu", "cpu", "smoke"} <= set(PRESETS)
    assert PRESETS["gpu"].width == 64 and PRESETS["cpu"].width < 64
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["cpu"].lr = 1.0
    assert preset("cpu", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="preset must be one of"):
        preset("tpu")
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_choose_preset():
    assert choose_preset(torch.device("cpu"), quick=True) == "smoke"
    assert choose_preset(torch.device("cpu"), quick=False) == "cpu"
    assert choose_preset(torch.device("cuda"), quick=False) == "gpu"


def test_onecycle_and_cosine_schedules():
    c = TrainConfig(lr=0.4, warmup=0.25, schedule="onecycle")
    lrs = [lr_at(s, 100, c) for s in range(100)]
    assert lrs[0] == pytest.approx(0.4 / 25) and max(lrs) == pytest.approx(0.4)
    assert lrs.index(max(lrs)) == 24 and lrs[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[24:]))  # decays monotonically
    cos = dataclasses.replace(c, schedule="cosine")
    mid = 25 + (99 - 25) // 2
    assert lr_at(mid, 100, cos) == pytest.approx(0.2, rel=0.02)  # half-way down the cosine
    # torch's own cosine as an oracle for the decay part
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=74)
    for s in range(25, 100):
        assert lr_at(s, 100, cos) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9)
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=r"step must be in \[0, 100\), got 100"):
        lr_at(100, 100, c)


def test_progressive_resizing_ends_at_full_size():
    c = TrainConfig(epochs=12, min_resolution=24, full_resolution_epochs=3)
    sizes = [train_resolution(e, c) for e in range(12)]
    assert sizes[0] == 24 and sizes[-3:] == [32, 32, 32]
    assert sizes == sorted(sizes) and all(s % 4 == 0 for s in sizes)
    assert {train_resolution(e, TrainConfig(epochs=5)) for e in range(5)} == {32}


def test_weight_decay_skips_batchnorm_and_biases():
    model = tiny_model()
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all((".weight" in names[id(p)] and p.ndim == 4) or names[id(p)] == "fc.weight"
               for p in decay["params"])
    assert any(names[id(p)] == "fc.bias" for p in no_decay["params"])
    assert any(names[id(p)] == "bn1.weight" for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(("change", "message"), [
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"full_resolution_epochs": -1}, "full_resolution_epochs must be an integer >= 0, got -1"),
    ({"seed": -1}, "seed must be an integer in [0, 4294967295], got -1"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5 (float)"),
    ({"min_resolution": 8.5}, "min_resolution must be an integer in [8, 32], got 8.5"),
])
def test_recipe_values_are_checked(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(TINY, **change)


def test_label_smoothing_floor_is_the_entropy_of_the_smoothed_target():
    from resnet_edu.recipe import smoothed_loss_floor

    eps, k = 0.2, 10
    target = torch.full((1, k), eps / k)
    target[0, 0] += 1 - eps
    # the loss of the best possible prediction (the target itself), computed by torch
    best = nn.functional.cross_entropy(target.log(), torch.tensor([0]), label_smoothing=eps)
    assert smoothed_loss_floor(eps, k) == pytest.approx(best.item(), rel=1e-6)
    assert smoothed_loss_floor(0.0, k) == 0.0


def test_the_sample_trains_the_epochs_its_validation_run_chose():
    """Notebook 04 on the shipped sample: a budget becomes SAMPLE_EPOCHS fixed epochs, the
    length bench/sample_epochs.py chose on the validation images (sample_epochs.json)."""
    from resnet_edu.locations import load_results
    from resnet_edu.recipe import SAMPLE_EPOCHS, on_the_sample, preset

    measured = load_results("sample_epochs.json")
    assert measured["chosen_epochs"] == SAMPLE_EPOCHS
    assert SAMPLE_EPOCHS in [run["epochs"] for run in measured["runs"]]
    config = on_the_sample(preset("cpu"))
    assert (config.epochs, config.budget_s) == (SAMPLE_EPOCHS, None)
    assert dataclasses.replace(config, epochs=16, budget_s=600.0) == preset("cpu")
    assert on_the_sample(preset("smoke")) == preset("smoke")  # no budget: kept
