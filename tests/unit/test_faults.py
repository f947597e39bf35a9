"""Fault injection: a training killed (SIGKILL, no chance to clean up) at random points,
mid-epoch and mid-write of its checkpoint or history, several times in a row, still ends
with exactly the weights, optimizer state and history of an uninterrupted run.

The kill points are drawn from a seeded generator and counted in events (optimizer steps,
`torch.save` calls, renames), not in seconds, so the test is repeatable on any machine.
"""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from resnet_edu.checkpoints import CHECKPOINT, HISTORY, load_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="uses SIGKILL")

EPOCHS, STEPS = 3, 2  # 128 images in batches of 64: 2 steps per epoch

_TRAIN = textwrap.dedent(f"""
    import io, os, signal, sys
    import torch
    from resnet_edu.data import load_sample
    from resnet_edu.runtime import seed_everything
    from resnet_edu.recipe import build_model, preset
    from resnet_edu.train import fit

    out, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    count = [0]

    def due():
        count[0] += 1
        return count[0] == n

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "step":  # killed before the n-th optimizer step of this process
        step = torch.optim.SGD.step
        def killed_step(self, *args, **kwargs):
            if due():
                die()
            return step(self, *args, **kwargs)
        torch.optim.SGD.step = killed_step
    elif kind == "torn":  # killed half-way through writing the n-th checkpoint
        save = torch.save
        def torn_save(obj, f, *args, **kwargs):
            if not due():
                return save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        torch.save = torn_save
    elif kind == "rename":  # killed with the n-th file fully written but not yet renamed
        replace = os.replace
        def killed_replace(src, dst):
            if due():
                die()
            return replace(src, dst)
        os.replace = killed_replace

    config = preset("smoke", width=4, epochs={EPOCHS}, train_subset={STEPS * 64},
                    batch_size=64, tta=False)
    seed_everything(0)
    fit(build_model(config), load_sample(), config, out_dir=out, device="cpu",
        progress=False, verbose=False)
""")


def _train(out, kind="none", n=0) -> int:
    done = subprocess.run([sys.executable, "-c", _TRAIN, str(out), kind, str(n)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _epochs_done(out) -> int:
    path = out / CHECKPOINT
    return int(load_checkpoint(path)["epoch"]) if path.exists() else 0


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert _train(straight) == 0

    rng = random.Random(11)
    kills = []
    for kind in ("step", "torn", "rename", "step", "torn"):
        left = EPOCHS - _epochs_done(broken)  # each kill point lies in the work still to do
        n = rng.randint(1, {"step": left * STEPS, "torn": left, "rename": 2 * left - 1}[kind])
        assert _train(broken, kind, n) == -signal.SIGKILL, f"{kind} {n} did not kill the run"
        kills.append((kind, n, _epochs_done(broken)))  # the checkpoint still loads
        if kind in ("torn", "rename"):
            assert any(p.name.endswith(".tmp") for p in broken.iterdir()), "no torn file left"
    assert _train(broken) == 0
    assert not [p.name for p in broken.iterdir() if p.name.endswith(".tmp")]

    a, b = load_checkpoint(straight / CHECKPOINT), load_checkpoint(broken / CHECKPOINT)
    assert b["epoch"] == EPOCHS, kills
    for name, weight in a["model"].items():
        assert torch.equal(weight, b["model"][name]), f"{name} differs after {kills}"
    for i, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    losses = [[e["train_loss"] for e in json.loads((d / HISTORY).read_text())["epochs"]]
              for d in (straight, broken)]
    assert losses[0] == losses[1] and len(losses[0]) == EPOCHS
