"""Per-cell and per-section wall time of the notebooks, for the lecture plans in docs/teaching.md.

Two sources, each stored under its own key in one JSON file:

    python bench/notebook_timings.py --quick       # execute every notebook with QUICK on (CI=true)
    python bench/notebook_timings.py --committed   # read the committed notebooks' own timings

`--quick` runs each notebook top to bottom in a fresh kernel (static widgets, as nbval runs
them) and reads the start and end time that the executor records on every cell. `--committed`
reads the same fields from the committed notebooks, that is, from the default-settings run
that produced the stored outputs (`python3 tasks.py notebooks`); nothing is executed. Where
that run reused a finished checkpoint (notebook 04), the training itself is not in those
numbers; the notebook prints the training time it measured instead.

The record keeps the machine's CPU count and load average before and after, because the
numbers are wall times on whatever else the machine was doing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat

from resnet_edu.locations import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def _seconds(meta: dict) -> float | None:
    m = meta.get("execution", {})
    if "iopub.execute_input" not in m or "shell.execute_reply" not in m:
        return None
    start = datetime.fromisoformat(m["iopub.execute_input"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(m["shell.execute_reply"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def cell_times(nb) -> dict:
    """Seconds per code cell and per `## ` section (cells before the first section: "set-up")."""
    section, sections, cells = "set-up", {}, []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            section = cell.source.splitlines()[0][3:].strip()
        if cell.cell_type != "code":
            continue
        t = _seconds(cell.metadata)
        if t is None:
            continue
        first = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
        cells.append({"index": i, "section": section, "first_line": first[:80],
                      "seconds": round(t, 2)})
        sections[section] = round(sections.get(section, 0.0) + t, 2)
    started = [c.metadata["execution"]["iopub.execute_input"] for c in nb.cells
               if "iopub.execute_input" in c.metadata.get("execution", {})]
    return {"executed_at": started[0] if started else None,
            "total_s": round(sum(c["seconds"] for c in cells), 1), "sections_s": sections,
            "cells": cells}


def execute(path: Path, quick: bool) -> dict:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_backup = dict(os.environ)
    os.environ.update(RESNET_EDU_STATIC="1", PYTHONHASHSEED="0")
    if quick:
        os.environ["CI"] = "true"
    else:
        os.environ.pop("CI", None)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=True,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        wall = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return {**cell_times(nb), "wall_with_kernel_start_s": round(wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="execute with QUICK on (CI=true)")
    mode.add_argument("--committed", action="store_true", help="read the committed timings")
    ap.add_argument("notebooks", nargs="*", help="default: every notebook")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "notebook_timings.json")
    args = ap.parse_args()

    paths = [Path(p).resolve() for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.ipynb"))
    key = "quick" if args.quick else "committed"
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    load_before = os.getloadavg()
    results = {}
    for path in paths:  # the file is rewritten after every notebook: a long run keeps its part
        if args.quick:
            results[path.name] = execute(path, quick=True)
        else:
            results[path.name] = cell_times(nbformat.read(path, as_version=4))
        print(f"{path.name}: {results[path.name]['total_s']:.1f} s in cells", flush=True)
        record[key] = {
            "command": "python bench/" + Path(__file__).name + " " + shlex.join(sys.argv[1:]),
            "what": ("executed now with QUICK on (CI=true), static widgets" if args.quick else
                     "the committed notebooks' recorded cell times (default settings)"),
            # the committed runs were made earlier, by `python3 tasks.py notebooks`, on a
            # machine the notebooks do not record: only each run's date (executed_at) is known
            **({"hardware": {"machine": platform.machine(), "processor": platform.processor(),
                             "cpu_count": os.cpu_count(), "python": platform.python_version()},
                "load_average_1min": {"before": round(load_before[0], 2),
                                      "after": round(os.getloadavg()[0], 2)},
                "date": datetime.now().date().isoformat()} if args.quick else {}),
            "notebooks": {**record.get(key, {}).get("notebooks", {}), **results},
        }
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    if args.out == RESULTS_DIR / "notebook_timings.json":
        update_guide(record)
        update_readme(record)
    return 0


def run_time(seconds: float) -> str:
    """A notebook's run time as the README's table prints it."""
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def update_readme(record: dict, readme: Path = ROOT / "README.md") -> None:
    """Rewrite the CPU column of the README's notebook table from the committed timings.

    Notebook 04's committed run loads a finished training run, so its cell times say nothing
    about training; its row keeps the `cpu` preset's time budget instead.
    """
    lines = readme.read_text().splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not (line.startswith("| 0") and len(cells) == 4) or cells[0] == "04":
            continue
        name = next((n for n in record["committed"]["notebooks"] if n.startswith(cells[0])), None)
        if name is not None:
            cells[3] = run_time(record["committed"]["notebooks"][name]["total_s"])
            lines[i] = "| " + " | ".join(cells) + " |"
    readme.write_text("\n".join(lines) + "\n")


def update_guide(record: dict, guide: Path = ROOT / "docs" / "teaching.md") -> None:
    """Rewrite the measured columns of the guide's `<!-- timings NN -->` tables from `record`.

    The section names and the planned minutes are the guide's own; the seconds are the
    measurements, so they are never typed by hand.
    """
    lines = guide.read_text().splitlines()
    number = None
    for i, line in enumerate(lines):
        if line.startswith("<!-- timings "):
            number = line.split()[2]
            continue
        if number is None or not line.startswith("| ") or line.startswith(("| section", "|---")):
            if not line.startswith("|"):
                number = None
            continue
        name = next((n for n in record["committed"]["notebooks"] if n.startswith(number)), None)
        cells = [c.strip() for c in line.strip("|").split("|")]
        for column, key in ((2, "committed"), (3, "quick")):
            measured = record.get(key, {}).get("notebooks", {}).get(name)
            if measured is None:
                cells[column] = "not measured"
            elif cells[0] == "**total**":
                cells[column] = f"{measured['total_s']:.1f}"
            else:
                seconds = measured["sections_s"].get(cells[0])
                cells[column] = "—" if seconds is None else f"{seconds:.1f}"
        lines[i] = "| " + " | ".join(cells) + " |"
    guide.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
