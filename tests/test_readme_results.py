"""Every result the README quotes is checked against the file in results/ that holds it, so a
re-run that changes a result fails here until the README says the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _row(command_start: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| {command_start}")]
    assert len(rows) == 1, f"expected one README benchmark row starting {command_start!r}"
    return rows[0]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f} %"


def test_cpu_preset_row_matches_the_last_cpu_benchmark():
    lines = [json.loads(x) for x in (ROOT / "results/bench_cpu.jsonl").read_text().splitlines()
             if x.strip()]
    run = [r for r in lines if r["preset"] == "cpu"][-1]
    row = _row("`cpu` preset")
    expected = [
        f"{_percent(run['final_test_acc'])} test",
        f"({_percent(run['final_test_acc_tta'])} with flip TTA)",
        f"{_percent(run['final_val_acc'])} val",
        f"{run['epochs']} epochs in {run['wall_time_to_final_epoch_s']:.0f} s of training",
        f"({run['wall_time_incl_eval_s']:.0f} s with per-epoch evaluation)",
        f"{run['images_per_s']:,.0f} images/s",
    ]
    for text in expected:
        assert text in row, f"README's cpu row should say {text!r} (results/bench_cpu.jsonl)"


def test_degradation_row_matches_its_results_file():
    results = json.loads((ROOT / "results/degradation_cpu.json").read_text())
    row = _row("degradation")
    assert f"`{results['command']}`" in row
    for name, net in results["nets"].items():
        text = f"{name} {100 * net['train_error'][-1]:.1f} %"
        assert text in row, f"README's degradation row should say {text!r}"
    steps = re.search(r"\(([\d,]+) steps per net\)", row)
    assert steps and f"{steps.group(1)} steps" in results["note"], "README's steps: the note's"


def test_notebook_run_times_are_the_committed_ones():
    """The README's CPU column is the committed notebooks' recorded cell time
    (bench/notebook_timings.py --committed rewrites it); notebook 04's is the preset's budget."""
    import sys

    from resnet_edu.recipe import preset

    sys.path.insert(0, str(ROOT / "bench"))
    from notebook_timings import run_time

    timings = json.loads((ROOT / "results/notebook_timings.json").read_text())["committed"]
    for name, measured in timings["notebooks"].items():
        row = [c.strip() for c in _row(name[:2] + " ").strip("|").split("|")]
        if name.startswith("04"):
            assert row[3].startswith(f"{preset('cpu').budget_s / 60:.0f} min"), row[3]
        else:
            assert row[3] == run_time(measured["total_s"]), (name, row[3])
