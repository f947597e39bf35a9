"""Run the widget cells of the notebooks in live mode, outside Jupyter, and fire every control.

    python tests/course/widget_cells.py notebooks/01_residual_formula.ipynb ...   # prints JSON

For each notebook it finds the cell that calls `interactive_figure(...)`, and the earlier
cells that define the names it needs (followed back through their own needs, by reading the
code with `symtable`), and runs just those, in order, with live widgets forced
(`RESNET_EDU_STATIC=0`) and the quick settings on. Then it moves every control one step and
records whether the figure was drawn again with the new value and came out different.
`OVERRIDES` makes inputs smaller and stands in for results that take long to compute (a
trained model's predictions); the widget cell itself always runs unchanged.

tests/course/test_widgets_majors.py runs this under ipywidgets 8 (the test environment) and 7.7
(the overlay first on PYTHONPATH).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import symtable
import sys
import time
import traceback
from pathlib import Path

WIDGET_CALL = "interactive_figure("
# notebook stem -> (names it provides, code run just before the widget cell): smaller inputs,
# so that each redraw takes a fraction of a second, and stand-ins for a trained model's output
OVERRIDES = {
    "01_residual_formula": (set(), "MAX_DEPTH = 10\n"),
    "02_gradient_flow": (set(), "x, y = x[:2, :, :8, :8], y[:2]\n"),
    "04_train_resnet18_cifar10": (
        {"probs", "matrix"},
        "probs = torch.softmax(torch.randn(len(data.test), len(CLASSES),\n"
        "                                  generator=torch.Generator().manual_seed(0)), 1)\n"
        "matrix = confusion_matrix(probs.argmax(1), data.test.labels)\n",
    ),
    "05_bug_hunt": (set(), "CIFAR = (3, 8, 8)\n"),
}


def _names(src: str) -> tuple[set[str], set[str]]:
    """(names a cell binds at its top level, global names it reads, in functions too)."""
    table = symtable.symtable(src, "<cell>", "exec")
    defined = {s.get_name() for s in table.get_symbols()
               if s.is_assigned() or s.is_imported() or s.is_namespace()}
    used: set[str] = set()
    stack = [table]
    while stack:
        t = stack.pop()
        for s in t.get_symbols():
            top = t.get_type() == "module"
            if s.is_referenced() and (top or s.is_global()):
                used.add(s.get_name())
        stack.extend(t.get_children())
    return defined, used - set(dir(builtins))


def widget_slice(cells: list[str], provided: set[str] = frozenset(),
                 prelude: str = "") -> list[int]:
    """Indices of the cells to run: the last widget cell and what it needs, in order.

    `provided` names are set by `prelude`, run before the widget cell.
    """
    calls = [i for i, src in enumerate(cells) if WIDGET_CALL in src]
    if not calls:
        return []
    target = calls[-1]
    parsed = [_names(src) for src in cells]
    needed = (parsed[target][1] - set(provided)) | _names(prelude)[1]
    chosen = [target]
    for i in range(target - 1, -1, -1):
        defined, used = parsed[i]
        if defined & needed:
            chosen.append(i)
            needed = (needed - defined) | used  # the latest definition is the one read
    return sorted(chosen)


def _fingerprint() -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    h = hashlib.sha256()
    for num in plt.get_fignums():
        fig = plt.figure(num)
        fig.set_dpi(20)  # enough pixels to tell two figures apart, and quick to render
        fig.canvas.draw()
        h.update(np.asarray(fig.canvas.buffer_rgba()).tobytes())
    plt.close("all")
    return h.hexdigest()


def _next_value(control):
    """One step away from the current value, towards the cheaper end where there is a choice."""
    if hasattr(control, "options"):
        index = control.index - 1 if control.index > 0 else control.index + 1
        return control.options[index] if not isinstance(control.options[index], tuple) \
            else control.options[index][1]
    if isinstance(control.value, bool):
        return not control.value
    down = control.value - control.step
    return down if down >= control.min else control.value + control.step


def run_notebook(path: Path) -> dict:
    import ipywidgets

    cells = [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
             for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    cells = [src for src in cells if "google.colab" not in src]  # the Colab install cell
    provided, prelude = OVERRIDES.get(path.stem, (set(), ""))
    chosen = widget_slice(cells, provided, prelude)
    result = {"notebook": path.name, "ipywidgets": ipywidgets.__version__,
              "cells_run": len(chosen), "controls": {}, "redraws": {}, "errors": []}
    if not chosen:
        return result
    calls: list[tuple[dict, str]] = []
    built = []
    original = ipywidgets.interactive_output

    def recording_output(f, controls):
        def drawn(**kwargs):
            try:
                f(**kwargs)
            except Exception:  # ipywidgets would only log it; the test must see it
                result["errors"].append(traceback.format_exc())
                raise
            calls.append((kwargs, _fingerprint()))

        built.append(controls)
        return original(drawn, controls)

    ipywidgets.interactive_output = recording_output
    namespace = {"__name__": "__main__"}
    start = time.perf_counter()
    try:
        for n, i in enumerate(chosen):
            code = cells[i] if n < len(chosen) - 1 else prelude + cells[i]
            exec(compile(code, f"{path.name}[code cell {i}]", "exec"), namespace)
    except Exception:
        result["errors"].append(traceback.format_exc())
        return result
    finally:
        ipywidgets.interactive_output = original
    if len(built) != 1 or len(calls) != 1:
        result["errors"].append(f"expected one widget built and one first draw, got "
                                f"{len(built)} and {len(calls)}")
        return result
    (controls,) = built
    for name, control in controls.items():
        result["controls"][name] = type(control).__name__
        before = calls[-1][1]
        value = _next_value(control)
        control.value = value
        kwargs, after = calls[-1]
        result["redraws"][name] = {"value": repr(value), "drawn_with_it": kwargs[name] == value,
                                   "figure_changed": after != before}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main(paths: list[str]) -> None:
    os.environ["RESNET_EDU_STATIC"] = "0"  # live widgets, although no front end is attached
    os.environ["RESNET_EDU_QUICK"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    import warnings

    warnings.filterwarnings("ignore", message=".*non-interactive.*")  # plt.show() under Agg
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is as fast, and fair to a busy machine
    results = []
    for path in [Path(p).resolve() for p in paths]:
        os.chdir(path.parent)  # notebooks read paths relative to their folder
        results.append(run_notebook(path))
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
