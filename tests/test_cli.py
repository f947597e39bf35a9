"""The command line: --help for every command, train on the sample, evaluate, errors."""

import json
import subprocess
import sys

import pytest
import torch

from resnet_edu.__main__ import _parser, main


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


def test_train_then_evaluate_on_the_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--sample", "--out", str(out), "--epochs", "1",
                 "--no-progress"]) == 0
    final = json.loads((out / "final.json").read_text())
    assert final["preset"] == "smoke" and 0 <= final["test_acc"] <= 1
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 1
    torch.load(out / "checkpoint.pt", weights_only=True)  # loads without pickled code
    capsys.readouterr()
    assert main(["evaluate", str(out / "checkpoint.pt"), "--sample"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 1000 and report["acc"] == pytest.approx(final["test_acc"])


def test_missing_data_and_checkpoint_are_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("resnet_edu.data.DEFAULT_DIR", tmp_path / "default")  # no full copy
    monkeypatch.delenv("RESNET_EDU_DATA", raising=False)
    assert main(["evaluate", str(tmp_path / "none.pt"), "--sample"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--data-dir", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "nowhere" in err


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "resnet_edu", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "train" in done.stdout and "evaluate" in done.stdout and "download" in done.stdout
