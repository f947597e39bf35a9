"""Checkpoints and run folders: every kind of bad file explained in one line (never with
advice to turn safe loading off), one training per folder, temporary files cleaned up."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from resnet_edu.__main__ import main
from resnet_edu.checkpoints import (
    CHECKPOINT,
    LOCK,
    CheckpointError,
    OutputDirError,
    atomic_write,
    load_checkpoint,
    lock_out_dir,
    prepare_out_dir,
    remove_stale_temp_files,
)
from resnet_edu.data import load_sample
from resnet_edu.recipe import build_model, preset
from resnet_edu.train import fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: no thread pool
TINY = preset("smoke", width=4, epochs=1, train_subset=128, batch_size=64, tta=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint of a one-epoch tiny run."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    fit(build_model(TINY), load_sample(), TINY, out_dir=out, device="cpu", progress=False,
        verbose=False)
    return out / CHECKPOINT


def _explained(path, capsys) -> str:
    """load_checkpoint's message, and the same line from `evaluate` with exit code 2."""
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert "\n" not in message and "weights_only=False" not in message
    assert main(["evaluate", str(path), "--sample"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    return message


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless here; a real attack would call something else


def test_bad_checkpoint_files_are_explained_in_one_line(checkpoint, tmp_path, capsys):
    random_bytes = tmp_path / "random.pt"
    random_bytes.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    assert "is not a PyTorch checkpoint (4,096 bytes" in _explained(random_bytes, capsys)

    truncated = tmp_path / "truncated.pt"
    data = checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert "is truncated or damaged" in _explained(truncated, capsys)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert "is truncated or damaged (0 bytes)" in _explained(empty, capsys)

    pickled_code = tmp_path / "code.pt"
    torch.save({"model": _RunsCode()}, pickled_code)
    assert "safe loading refused it (loading it could run code)" in _explained(pickled_code,
                                                                                capsys)

    assert "no checkpoint at" in _explained(tmp_path / "absent.pt", capsys)
    assert "(a folder)" in _explained(tmp_path, capsys)


def test_a_torchvision_state_dict_says_how_to_load_it(tmp_path, capsys):
    import torchvision

    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    message = _explained(path, capsys)
    assert "holds bare model weights (a state_dict of 122 tensors)" in message
    assert "model.load_state_dict(torch.load(path, weights_only=True))" in message
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3), "step": 4}, other)
    assert ("it lacks model, optimizer, scaler, epoch, config, history, planned_epochs, "
            "planned_steps, data, start_loss, hardware") in _explained(other, capsys)


def test_an_unknown_config_field_and_another_architecture(checkpoint, tmp_path, capsys):
    state = torch.load(checkpoint, weights_only=True)
    newer = tmp_path / "newer.pt"
    torch.save({**state, "config": {**state["config"], "ema": 0.99}}, newer)
    load_checkpoint(newer)  # the file itself is fine
    assert main(["evaluate", str(newer), "--sample"]) == 2
    assert "another version of resnet-edu" in capsys.readouterr().err
    wider = tmp_path / "wider.pt"
    torch.save({**state, "config": {**state["config"], "width": 8}}, wider)
    assert main(["evaluate", str(wider), "--sample"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds weights of another architecture than ResNet" in err
    assert "shapes differ (e.g. conv1.weight (4, 3, 3, 3) in the file, (8, 3, 3, 3) in the " \
           "model)" in err


def test_fit_refuses_a_foreign_checkpoint_in_its_folder(checkpoint, tmp_path):
    import torchvision

    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="bare model weights"):
        fit(build_model(TINY), load_sample(), TINY, out_dir=tmp_path, device="cpu",
            progress=False, verbose=False)


def test_output_folder_checks(tmp_path):
    assert prepare_out_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputDirError, match=r"out_dir .* is a file, not a folder"):
        prepare_out_dir(tmp_path / "f")
    with pytest.raises(OutputDirError, match=r"--out .* is a file"):
        prepare_out_dir(tmp_path / "f", name="--out")
    with pytest.raises(OutputDirError, match="out_dir"):
        fit(build_model(TINY), load_sample(), TINY, out_dir=tmp_path / "f", device="cpu")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="needs POSIX permissions that apply (root writes anywhere)")
def test_a_read_only_folder_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputDirError, match="is not writable"):
            prepare_out_dir(tmp_path)
    finally:
        tmp_path.chmod(0o700)


_HOLD_LOCK = textwrap.dedent("""
    import sys
    from resnet_edu.checkpoints import lock_out_dir
    with lock_out_dir(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
""")


def test_a_second_training_into_the_same_folder_is_refused_at_once(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "locked\n"
        assert main(["train", "--sample", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another training (process {other.pid})" in err
        assert "data:" not in capsys.readouterr().out  # refused before loading anything
        with pytest.raises(OutputDirError, match="in use by another training"):
            fit(build_model(TINY), load_sample(), TINY, out_dir=tmp_path, device="cpu")
    finally:
        other.kill()  # a killed holder leaves no stale lock: the system releases it
        other.wait()
    with lock_out_dir(tmp_path), lock_out_dir(tmp_path):  # re-entrant in one process
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())


def test_writes_are_atomic_and_stale_temporary_files_are_removed(tmp_path):
    target = tmp_path / CHECKPOINT
    atomic_write(target, lambda f: f.write(b"old"))

    def fails_half_way(f):
        f.write(b"new, half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fails_half_way)
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == [CHECKPOINT]
    # what a killed process leaves: its temporary files (two at once: the names are unique)
    stale = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / ".history.json.x1.tmp",
             tmp_path / "checkpoint.pt.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    (tmp_path / "notes.tmp").write_text("mine")  # not ours: kept
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT, "notes.tmp"]


class _Poisoned(nn.Module):
    """A tiny classifier whose training-mode outputs turn to nan from call `at` on."""

    def __init__(self, at: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.calls, self.at = build_model(TINY), 0, at

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls >= self.at:
                return self.net(x) * float("nan")
        return self.net(x)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    config = preset("smoke", width=4, epochs=3, train_subset=128, batch_size=64, tta=False)
    with pytest.raises(Exception, match="diverged in epoch 2") as e:  # 2 steps per epoch
        fit(_Poisoned(at=4), load_sample(), config, out_dir=tmp_path, device="cpu",
            progress=False, verbose=False)
    assert type(e.value).__name__ == "TrainingDiverged"
    assert "the checkpoint of epoch 1 in" in str(e.value) and "lower lr" in str(e.value)
    assert load_checkpoint(tmp_path / CHECKPOINT)["epoch"] == 1


def test_a_loss_ten_times_its_start_stops_training():
    config = preset("smoke", width=4, epochs=1, train_subset=128, batch_size=64, lr=50,
                    tta=False)
    torch.manual_seed(0)
    with pytest.raises(Exception, match=r"diverged in epoch 1: the loss reached") as e:
        fit(build_model(config), load_sample(), config, device="cpu", progress=False,
            verbose=False)
    assert "no checkpoint was written" in str(e.value)
