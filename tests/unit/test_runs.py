"""A run's record and its resume check: another recipe or a checkpoint missing a field is
refused; a loaded run reports the hardware it trained on."""

import dataclasses
import json

import pytest
import torch

from resnet_edu.train import fit

from helpers import TINY, tiny_model


class _Stop(Exception):
    pass


def _stop_after(epochs: int):
    def callback(history):
        if len(history.epochs) >= epochs:
            raise _Stop  # the checkpoint of this epoch is already on disk
    return callback


def test_resume_refuses_a_different_recipe(sample, tmp_path):
    fit(tiny_model(), sample, dataclasses.replace(TINY, epochs=1), out_dir=tmp_path,
        device=torch.device("cpu"), progress=False, verbose=False)
    with pytest.raises(ValueError, match=r"different recipe.*lr"):
        fit(tiny_model(), sample, dataclasses.replace(TINY, epochs=1, lr=0.3),
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
        fit(tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
            verbose=False, callbacks=[_stop_after(1)])
    monkeypatch.setattr(train_module, "device_name", lambda device=None: "machine B")
    resumed = fit(tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
                  verbose=False)  # epoch 2 on machine B
    assert resumed.hardware == "machine A, then machine B"
    monkeypatch.setattr(train_module, "device_name", lambda device=None: "machine C")
    loaded = fit(tiny_model(), sample, TINY, out_dir=tmp_path, device=cpu, progress=False,
                 verbose=False)  # finished: loaded on machine C, which trained nothing
    assert loaded.hardware == "machine A, then machine B"
    assert json.loads((tmp_path / "history.json").read_text())["hardware"] == loaded.hardware
