"""The trainer: recipe rules, parameter groups, AMP resolution, checkpoint and exact resume."""

import dataclasses
import json

import pytest
import torch

from resnet_edu.checkpoints import load_checkpoint
from resnet_edu.evaluation import evaluate
from resnet_edu.recipe import (
    build_model,
    param_groups,
)
from resnet_edu.runtime import channels_last_trains_safely
from resnet_edu.train import fit

from helpers import TINY, tiny_model


def test_the_ablation_switches_change_what_they_name(sample):
    """`decay_norm_and_bias` decays BN and biases too; `zero_init_residual=False` leaves the
    last BN of each block at 1; both reach the optimizer and the model `fit` trains."""
    from resnet_edu.train import make_parts

    _, all_decay = param_groups(tiny_model(), 5e-4, decay_norm_and_bias=True)
    assert all_decay["weight_decay"] == 5e-4
    config = dataclasses.replace(TINY, decay_norm_and_bias=True)
    parts = make_parts(tiny_model(), sample.train, config, "cpu")
    assert [g["weight_decay"] for g in parts.optimizer.param_groups] == [5e-4, 5e-4]
    zero, one = (build_model(dataclasses.replace(TINY, zero_init_residual=z))
                 for z in (True, False))
    assert torch.count_nonzero(zero.layer1[0].bn2.weight) == 0
    assert torch.all(one.layer1[0].bn2.weight == 1)


def test_fit_bf16_and_channels_last_paths_run_on_cpu(sample):
    model = tiny_model()
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
    straight = tiny_model()
    h2 = fit(straight, sample, TINY, out_dir=tmp_path / "a", device=torch.device("cpu"),
             progress=False, verbose=False)
    # the same run, interrupted after epoch 1 (like a closed laptop), then called again
    state_dir = tmp_path / "b"
    with pytest.raises(_Stop):
        fit(tiny_model(), sample, TINY, out_dir=state_dir, device=torch.device("cpu"),
            progress=False, verbose=False, callbacks=[_stop_after(1)])
    ckpt = load_checkpoint(state_dir / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    resumed = tiny_model()
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


def test_fit_checks_device_and_splits_before_training(sample):
    with pytest.raises(ValueError, match="device must be 'cuda', 'mps' or 'cpu'"):
        fit(tiny_model(), sample, TINY, device="gpu")
    empty = dataclasses.replace(sample, val=sample.val.subset(slice(0, 0)))
    with pytest.raises(ValueError, match=r"data\.val has no images: leave it out of eval_splits"):
        fit(tiny_model(), empty, TINY)


def test_images_per_s_is_images_over_training_time(sample):
    history = fit(tiny_model(), sample, TINY, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=())
    per_epoch = (TINY.train_subset // TINY.batch_size) * TINY.batch_size  # full batches only
    expected = TINY.epochs * per_epoch / history.last["train_time_s"]
    assert history.images_per_s() == pytest.approx(expected, rel=1e-9)


def test_figures_after_training_are_computed_as_fit_computed_them(sample):
    """`evaluate(..., **eval_settings(config, device))` repeats fit's last evaluation exactly."""
    from resnet_edu.train import eval_settings

    config = dataclasses.replace(TINY, amp="auto")  # bf16 where the CPU has it: precision matters
    model = tiny_model()
    history = fit(model, sample, config, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=("val",))
    again = evaluate(model, sample.val, tta=True, **eval_settings(config, torch.device("cpu")))
    assert again["acc"] == history.last["val_acc"]
    assert again["acc_tta"] == history.last["val_acc_tta"]


def test_named_eval_sets_are_evaluated_after_every_epoch_like_the_splits(sample):
    """A fixed subset of training images, measured in eval mode after each epoch (the family's
    train error), gives what `evaluate` gives on the same images and the final weights."""
    from resnet_edu.train import eval_settings

    fixed = sample.train.subset(slice(0, 300))
    model = tiny_model()
    history = fit(model, sample, TINY, device=torch.device("cpu"), progress=False,
                  verbose=False, eval_splits=("val",), eval_sets={"train_fixed": fixed})
    assert all("train_fixed_acc" in e and "val_acc" in e for e in history.epochs)
    again = evaluate(model, fixed, tta=True, **eval_settings(TINY, torch.device("cpu")))
    assert again["acc"] == history.last["train_fixed_acc"]
    assert again["loss"] == pytest.approx(history.last["train_fixed_loss"], rel=1e-6)
    with pytest.raises(ValueError, match=r"eval_sets must map new names to non-empty ImageSets, "
                                         r"got 'val'"):
        fit(tiny_model(), sample, TINY, eval_sets={"val": fixed})
    with pytest.raises(ValueError, match="got 'empty': ImageSet"):
        fit(tiny_model(), sample, TINY, eval_sets={"empty": fixed.subset(slice(0, 0))})
