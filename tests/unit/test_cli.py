"""The command line: --help for every command, train on the sample, evaluate, and every
mistake a student makes answered with one line that names the option, exit code 2."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from resnet_edu.__main__ import _parser, main
from resnet_edu.data import LAYOUT, SAMPLE_DIR

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: no thread pool
SMOKE = ["--preset", "smoke", "--epochs", "1", "--no-progress", "--device", "cpu"]


def _error(capsys) -> str:
    """The one line a failed command printed on stderr."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_full_copy(tmp_path, monkeypatch):
    monkeypatch.setattr("resnet_edu.data.DEFAULT_DIR", tmp_path / "default")
    monkeypatch.delenv("RESNET_EDU_DATA", raising=False)


def test_help_explains_every_option(capsys):
    for command in ("train", "evaluate", "download"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        sub = next(a for a in _parser()._subparsers._group_actions[0].choices.items()
                   if a[0] == command)[1]
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{command} {action.option_strings} has no help"
                assert action.option_strings[-1] in text


def test_train_on_the_sample_folder_then_evaluate(tmp_path, capsys):
    # the shipped sample through --data-dir: a tenth of its 2,000 images is held out
    out = tmp_path / "run"
    assert main(["train", *SMOKE, "--data-dir", str(SAMPLE_DIR), "--out", str(out)]) == 0
    assert "1800 train, 200 val, 1000 test" in capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    assert final["preset"] == "smoke"
    assert (final["test_acc"] * 1000) == pytest.approx(round(final["test_acc"] * 1000))  # k/1000
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 1
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # loads without pickled code
    assert state["data"]["train"] == 1800 and state["data"]["val"] == 200
    assert main(["evaluate", str(out / "checkpoint.pt"), "--sample"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 1000 and report["acc"] == pytest.approx(final["test_acc"])
    assert main(["evaluate", str(out / "checkpoint.pt"), "--sample", "--split", "val",
                 "--val-size", "300"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["images"] == 300


@pytest.mark.parametrize(("args", "expected"), [
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
    (["--seed", "4294967296"], "--seed must be an integer in [0, 4294967295]"),
    (["--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["--lr", "-0.1"], "--lr must be a finite number > 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
    (["--device", "gpu"], "--device must be 'cuda', 'mps' or 'cpu'"),
    (["--val-size", "10.5"], "argument --val-size: invalid int value: '10.5'"),
    (["--val-size", "-3"], "--val-size must be an integer in [0, 1999], got -3"),
    (["--val-size", "5000"], "--val-size must be an integer in [0, 1999], got 5000: the "
                             "training set has 2,000 images"),
    (["--data-dir", "x"], "--sample uses the shipped sample: leave out --data-dir"),
])
def test_bad_arguments_fail_fast_with_one_line(args, expected, tmp_path, capsys):
    out = tmp_path / "o"
    try:
        code = main(["train", "--sample", "--out", str(out), *args])
    except SystemExit as e:  # argparse itself refuses a value that is not a number
        code = e.code
    assert code == 2
    assert expected in _error(capsys)
    assert not (out / "checkpoint.pt").exists()  # nothing ran


def test_cuda_device_on_a_machine_without_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", "--sample", "--out", str(tmp_path), "--device", "cuda"]) == 2
    assert "--device 'cuda': PyTorch sees no CUDA GPU" in _error(capsys)


def test_a_wrong_data_dir_never_falls_back_to_another_copy(tmp_path, capsys, monkeypatch):
    default = tmp_path / "default"
    shutil.copytree(SAMPLE_DIR / LAYOUT, default / LAYOUT)  # a copy the loader could use
    monkeypatch.setattr("resnet_edu.data.DEFAULT_DIR", default)
    out = str(tmp_path / "o")
    assert main(["train", "--data-dir", str(tmp_path / "typo"), "--out", out]) == 2
    line = _error(capsys)
    assert f"--data-dir {tmp_path / 'typo'}: no complete CIFAR-10 copy there" in line
    assert "no such folder" in line and "--sample" in line and "--download" in line
    partial = tmp_path / "partial"
    shutil.copytree(SAMPLE_DIR / LAYOUT, partial / LAYOUT)
    (partial / LAYOUT / "test_batch").unlink()
    assert main(["train", "--data-dir", str(partial), "--out", out]) == 2
    assert "missing test_batch" in _error(capsys)


def test_missing_data_names_the_command_line_flags(tmp_path, capsys, no_full_copy):
    assert main(["train", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    line = _error(capsys)
    assert "CIFAR-10 not found" in line
    assert "--data-dir" in line and "--download" in line and "--sample" in line
    assert "download=True" not in line and "load_sample()" not in line


def test_unusable_output_folders_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert main(["train", "--sample", "--out", str(a_file)]) == 2
    assert f"--out {a_file} is a file, not a folder" in _error(capsys)
    assert main(["train", "--sample", "--out", str(a_file / "run")]) == 2
    assert "part of that path is a file" in _error(capsys)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("resnet_edu.checkpoints.tempfile.mkstemp", read_only)
    assert main(["train", "--sample", "--out", str(tmp_path / "ro")]) == 2
    line = _error(capsys)
    assert "--out" in line and "is not writable (Permission denied)" in line


def test_resume_refuses_another_recipe_or_other_data(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["train", *SMOKE, "--sample", "--out", out]) == 0
    capsys.readouterr()
    assert main(["train", *SMOKE, "--sample", "--out", out, "--seed", "1"]) == 2
    line = _error(capsys)
    assert "different recipe (seed: 0 -> 1)" in line and "--no-resume" in line
    assert "resume=False" not in line.split("--no-resume")[0]  # the flag comes first
    # the same files, another split: 1,700 training images instead of 1,800
    assert main(["train", *SMOKE, "--sample", "--val-size", "300", "--out", out]) == 2
    line = _error(capsys)
    assert "was trained on other data (1800 training and 200 validation images" in line
    assert "now 1700 and 300" in line and "--no-resume" in line
    assert main(["train", *SMOKE, "--sample", "--val-size", "300", "--out", out,
                 "--no-resume"]) == 0


def test_ctrl_c_says_where_the_checkpoint_is_and_how_to_resume(tmp_path, capsys, monkeypatch):
    from resnet_edu.train import History

    save = History.save

    def save_then_ctrl_c(self, path):
        save(self, path)
        raise KeyboardInterrupt  # right after epoch 1 is on disk

    out = tmp_path / "o"
    monkeypatch.setattr(History, "save", save_then_ctrl_c)
    args = ["train", *SMOKE[:2], "--epochs", "2", "--no-progress", "--sample", "--out", str(out)]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert f"the checkpoint of epoch 1 is in {out / 'checkpoint.pt'}" in err
    assert "to resume, run the same command again" in err and "Traceback" not in err
    monkeypatch.setattr(History, "save", save)
    assert main(args) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert [e["epoch"] for e in json.loads((out / "history.json").read_text())["epochs"]] == [1, 2]


def test_ctrl_c_before_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("resnet_edu.train.fit", ctrl_c)
    assert main(["train", "--sample", "--out", str(tmp_path)]) == 130
    assert "interrupted before the first checkpoint" in capsys.readouterr().err


def test_divergence_stops_training_with_advice(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", *SMOKE, "--sample", "--out", str(out), "--lr", "50"]) == 1
    line = _error(capsys)
    assert "training diverged in epoch 1" in line and "lower lr (now 50, try 5)" in line
    assert not (out / "checkpoint.pt").exists()


def test_module_entry_point_runs_and_errors_have_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "resnet_edu", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "train" in done.stdout and "evaluate" in done.stdout and "download" in done.stdout
    done = subprocess.run([sys.executable, "-m", "resnet_edu", "train", "--sample", "--out",
                           str(tmp_path), "--seed", "-1"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2
    assert done.stderr == "error: --seed must be an integer in [0, 4294967295], got -1\n"
