"""The trainer: recipe rules, parameter groups, AMP resolution, checkpoint and exact resume."""

import dataclasses
import itertools
import json
import re

import pytest
import torch
from torch import nn

from resnet_edu.checkpoints import load_checkpoint
from resnet_edu.data import ImageSet, load_sample, normalize
from resnet_edu.evaluation import evaluate
from resnet_edu.precision import resolve_amp
from resnet_edu.recipe import (
    PRESETS,
    TrainConfig,
    build_model,
    choose_preset,
    lr_at,
    param_groups,
    preset,
    train_resolution,
)
from resnet_edu.runtime import channels_last_trains_safely, cpu_has_native_bf16
from resnet_edu.train import fit

TINY = TrainConfig(name="tiny", width=4, epochs=2, batch_size=64, lr=0.1, train_subset=192,
                   eval_batch_size=256, tta=True, amp="off", min_resolution=24,
                   full_resolution_epochs=1)


@pytest.fixture(scope="module")
def sample():
    return load_sample()


def _tiny_model() -> nn.Module:
    from resnet_edu.models import resnet18_cifar

    torch.manual_seed(0)
    return resnet18_cifar(width=4)


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
    model = _tiny_model()
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all((".weight" in names[id(p)] and p.ndim == 4) or names[id(p)] == "fc.weight"
               for p in decay["params"])
    assert any(names[id(p)] == "fc.bias" for p in no_decay["params"])
    assert any(names[id(p)] == "bn1.weight" for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_the_ablation_switches_change_what_they_name(sample):
    """`decay_norm_and_bias` decays BN and biases too; `zero_init_residual=False` leaves the
    last BN of each block at 1; both reach the optimizer and the model `fit` trains."""
    from resnet_edu.train import make_parts

    _, all_decay = param_groups(_tiny_model(), 5e-4, decay_norm_and_bias=True)
    assert all_decay["weight_decay"] == 5e-4
    config = dataclasses.replace(TINY, decay_norm_and_bias=True)
    parts = make_parts(_tiny_model(), sample.train, config, "cpu")
    assert [g["weight_decay"] for g in parts.optimizer.param_groups] == [5e-4, 5e-4]
    zero, one = (build_model(dataclasses.replace(TINY, zero_init_residual=z))
                 for z in (True, False))
    assert torch.count_nonzero(zero.layer1[0].bn2.weight) == 0
    assert torch.all(one.layer1[0].bn2.weight == 1)


def test_amp_resolution_is_guarded():
    cpu = torch.device("cpu")
    native = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_amp("auto", cpu) is native and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="CUDA"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="amp"):
        resolve_amp("fp8", cpu)


def test_fit_bf16_and_channels_last_paths_run_on_cpu(sample):
    model = _tiny_model()
    config = dataclasses.replace(TINY, amp="bf16", channels_last=True)  # 2 epochs: 24, 32 px
    seen = set()  # (training?, dtype) of conv1's outputs: bf16 means autocast ran
    model.conv1.register_forward_hook(lambda m, i, out: seen.add((m.training, out.dtype)))
    history = fit(model, sample, config, device=torch.device("cpu"), progress=False,
                  verbose=False)
    assert history.column("resolution") == [24, 32]  # progressive resizing, then full size
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen
    assert all(torch.isfinite(torch.tensor(history.column("train_loss"))))
    # channels_last where training in it is safe (CUDA, AVX-512 CPUs), contiguous elsewhere
    wanted = channels_last_trains_safely(torch.device("cpu"))
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last) is wanted
    # the recorded val accuracy is the final model's, evaluated the same way
    again = evaluate(model, sample.val, amp="bf16", channels_last=wanted, tta=True)
    assert history.last["val_acc"] == again["acc"]


def test_resume_reproduces_an_uninterrupted_run(sample, tmp_path):
    straight = _tiny_model()
    h2 = fit(straight, sample, TINY, out_dir=tmp_path / "a", device=torch.device("cpu"),
             progress=False, verbose=False)
    # the same run, interrupted after epoch 1 (like a closed laptop), then called again
    state_dir = tmp_path / "b"
    with pytest.raises(_Stop):
        fit(_tiny_model(), sample, TINY, out_dir=state_dir, device=torch.device("cpu"),
            progress=False, verbose=False, callbacks=[_stop_after(1)])
    ckpt = load_checkpoint(state_dir / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    resumed = _tiny_model()
    h_resumed = fit(resumed, sample, TINY, out_dir=state_dir, device=torch.device("cpu"),
                    progress=False, verbose=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert [e["train_loss"] for e in h_resumed.epochs] == [e["train_loss"] for e in h2.epochs]
    saved = json.loads((state_dir / "history.json").read_text())
    assert [e["epoch"] for e in saved["epochs"]] == [1, 2]
    # a checkpoint holds only tensors and plain values: weights_only loading works
    state = torch.load(state_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"] == TINY.to_dict()


class _Stop(Exception):
    pass


def _stop_after(epochs: int):
    def callback(history):
        if len(history.epochs) >= epochs:
            raise _Stop  # the checkpoint of this epoch is already on disk
    return callback


def test_resume_refuses_a_different_recipe(sample, tmp_path):
    fit(_tiny_model(), sample, dataclasses.replace(TINY, epochs=1), out_dir=tmp_path,
        device=torch.device("cpu"), progress=False, verbose=False)
    with pytest.raises(ValueError, match=r"different recipe.*lr"):
        fit(_tiny_model(), sample, dataclasses.replace(TINY, epochs=1, lr=0.3),
            out_dir=tmp_path, device=torch.device("cpu"), progress=False, verbose=False)


def test_a_checkpoint_missing_a_field_of_the_recipe_is_refused_not_defaulted(tmp_path):
    """A recipe field the checkpoint lacks is a difference, named with the value it now has:
    no version was released whose checkpoints lack one, so none is filled in."""
    from resnet_edu.runs import check_resume

    older = {"config": {k: v for k, v in TINY.to_dict().items() if k != "cutout"},
             "data": {"fingerprint": "x"}}
    with pytest.raises(ValueError, match=r"different recipe \(cutout: None -> 0\)"):
        check_resume(older, TINY, {"fingerprint": "x"}, tmp_path / "checkpoint.pt")


def test_evaluate_matches_a_manual_count_and_tta_is_flip_invariant(sample):
    model = _tiny_model().eval()
    data = sample.test.subset(slice(0, 300))
    result = evaluate(model, data, tta=True, batch_size=128)
    with torch.no_grad():
        logits = model(normalize(data.images))
        flipped = model(normalize(data.images.flip(-1)))
    assert result["acc"] == pytest.approx((logits.argmax(1) == data.labels).float().mean().item())
    assert result["loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, data.labels).item(), rel=1e-5)
    mirrored = evaluate(model, ImageSet(data.images.flip(-1), data.labels), tta=True)
    assert mirrored["acc_tta"] == pytest.approx(result["acc_tta"])  # TTA sees both views
    assert mirrored["acc"] == pytest.approx(
        (flipped.argmax(1) == data.labels).float().mean().item())


def test_exercise_checks_reject_wrong_answers():
    from resnet_edu.course.nb04_training import check_one_cycle, check_split_parameters

    everything_decayed = check_split_parameters(lambda m: (list(m.parameters()), []))
    assert not everything_decayed and "should not be decayed" in everything_decayed.message
    no_warmup = check_one_cycle(lambda step, total, peak, warmup: peak * (1 - step / total))
    assert not no_warmup and "should be" in no_warmup.message
    assert not check_one_cycle(lambda *args: ...)  # not attempted: feedback, no exception


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


def test_fit_checks_device_and_splits_before_training(sample):
    with pytest.raises(ValueError, match="device must be 'cuda', 'mps' or 'cpu'"):
        fit(_tiny_model(), sample, TINY, device="gpu")
    empty = dataclasses.replace(sample, val=sample.val.subset(slice(0, 0)))
    with pytest.raises(ValueError, match=r"data\.val has no images: leave it out of eval_splits"):
        fit(_tiny_model(), empty, TINY)


def test_a_loaded_run_reports_the_hardware_it_trained_on(sample, tmp_path, monkeypatch):
    import resnet_edu.runs as train_module  # where a run records its hardware

    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "device_name", lambda device=None: "machine A")
    with pytest.raises(_Stop):  # epoch 1 on machine A
        fit(_tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
            verbose=False, callbacks=[_stop_after(1)])
    monkeypatch.setattr(train_module, "device_name", lambda device=None: "machine B")
    resumed = fit(_tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
                  verbose=False)  # epoch 2 on machine B
    assert resumed.hardware == "machine A, then machine B"
    monkeypatch.setattr(train_module, "device_name", lambda device=None: "machine C")
    loaded = fit(_tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
                 verbose=False)  # finished: loaded on machine C, which trained nothing
    assert loaded.hardware == "machine A, then machine B"
    assert json.loads((tmp_path / "history.json").read_text())["hardware"] == loaded.hardware


def test_images_per_s_is_images_over_training_time(sample):
    history = fit(_tiny_model(), sample, TINY, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=())
    per_epoch = (TINY.train_subset // TINY.batch_size) * TINY.batch_size  # full batches only
    expected = TINY.epochs * per_epoch / history.last["train_time_s"]
    assert history.images_per_s() == pytest.approx(expected, rel=1e-9)


def test_figures_after_training_are_computed_as_fit_computed_them(sample):
    """`evaluate(..., **eval_settings(config, device))` repeats fit's last evaluation exactly."""
    from resnet_edu.train import eval_settings

    config = dataclasses.replace(TINY, amp="auto")  # bf16 where the CPU has it: precision matters
    model = _tiny_model()
    history = fit(model, sample, config, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=("val",))
    again = evaluate(model, sample.val, tta=True, **eval_settings(config, torch.device("cpu")))
    assert again["acc"] == history.last["val_acc"]
    assert again["acc_tta"] == history.last["val_acc_tta"]


def test_confusion_pairs_and_mistakes_by_loss():
    from resnet_edu.evaluation import most_confident_mistakes, top_confusions

    matrix = torch.tensor([[5, 3, 0], [4, 6, 1], [0, 2, 9]])
    assert top_confusions(matrix, k=2) == [(0, 1, 7), (1, 2, 3)]
    probs = torch.tensor([[0.1, 0.8, 0.1],    # wrong, confident, true class at 0.1
                          [0.5, 0.45, 0.05],  # wrong, less confident, true class at 0.05
                          [0.9, 0.05, 0.05]])  # right
    labels = torch.tensor([0, 2, 0])
    assert most_confident_mistakes(probs, labels).tolist() == [0, 1]
    assert most_confident_mistakes(probs, labels, by="loss").tolist() == [1, 0]


def test_label_smoothing_floor_is_the_entropy_of_the_smoothed_target():
    from resnet_edu.recipe import smoothed_loss_floor

    eps, k = 0.2, 10
    target = torch.full((1, k), eps / k)
    target[0, 0] += 1 - eps
    # the loss of the best possible prediction (the target itself), computed by torch
    best = nn.functional.cross_entropy(target.log(), torch.tensor([0]), label_smoothing=eps)
    assert smoothed_loss_floor(eps, k) == pytest.approx(best.item(), rel=1e-6)
    assert smoothed_loss_floor(0.0, k) == 0.0


def test_named_eval_sets_are_evaluated_after_every_epoch_like_the_splits(sample):
    """A fixed subset of training images, measured in eval mode after each epoch (the family's
    train error), gives what `evaluate` gives on the same images and the final weights."""
    from resnet_edu.train import eval_settings

    fixed = sample.train.subset(slice(0, 300))
    model = _tiny_model()
    history = fit(model, sample, TINY, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=("val",), eval_sets={"train_fixed": fixed})
    assert all("train_fixed_acc" in e and "val_acc" in e for e in history.epochs)
    again = evaluate(model, fixed, tta=True, **eval_settings(TINY, torch.device("cpu")))
    assert again["acc"] == history.last["train_fixed_acc"]
    assert again["loss"] == pytest.approx(history.last["train_fixed_loss"], rel=1e-6)
    with pytest.raises(ValueError, match=r"eval_sets must map new names to non-empty ImageSets, "
                                         r"got 'val'"):
        fit(_tiny_model(), sample, TINY, eval_sets={"val": fixed})
    with pytest.raises(ValueError, match="got 'empty': ImageSet"):
        fit(_tiny_model(), sample, TINY, eval_sets={"empty": fixed.subset(slice(0, 0))})


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
