"""Every result the README quotes is checked against the stored results file that holds it, so a
re-run that changes a result fails here until the README says the same. (The benchmark table
itself is generated: tests/repo/test_bench.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from resnet_edu.locations import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _row(first_cell: str) -> str:
    rows = [line for line in README.splitlines() if line.startswith(f"| {first_cell}")]
    assert len(rows) == 1, f"expected one README table row starting {first_cell!r}"
    return rows[0]


def test_notebook_run_times_are_the_committed_ones():
    """The README's CPU column is the committed notebooks' recorded cell time
    (bench/notebook_timings.py --committed rewrites it); notebook 04's is the preset's budget."""
    from notebook_timings import run_time

    from resnet_edu.recipe import preset

    timings = json.loads((RESULTS_DIR / "notebook_timings.json").read_text())["committed"]
    for name, measured in timings["notebooks"].items():
        row = [c.strip() for c in _row(name[:2] + " ").strip("|").split("|")]
        if name.startswith("04"):
            assert row[3].startswith(f"{preset('cpu').budget_s / 60:.0f} min"), row[3]
        else:
            assert row[3] == run_time(measured["total_s"]), (name, row[3])
