"""A run's record and its resume check: another recipe or a checkpoint missing a field is
refused; a loaded run reports the hardware it trained on."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from resnet_edu.data import load_sample
from resnet_edu.recipe import (
    TrainConfig,
)
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
