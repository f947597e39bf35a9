"""Notebook helpers: interactive figures that degrade to one static figure, training curves
redrawn live, and expected errors shown without halting "Run All".

In JupyterLab or Colab, `interactive_figure(draw, depth=(2, 60, 2), ...)` shows ipywidgets
controls and redraws on every change. In static mode (nbval, nbconvert, CI, or
`RESNET_EDU_STATIC=1`) it draws once with the default values, so the cell still shows
the figure and "Run All" never waits on a front end. `RESNET_EDU_STATIC=0` forces live
widgets, even under CI (the browser test uses it).

A cell that raises stops "Run All" in JupyterLab and Colab, so notebooks run code that is
meant to fail through `show_error`, which catches the one exception it expects and prints it.

Only API common to ipywidgets 7.6+ and 8 is used (`interactive_output`, `IntSlider`,
`FloatSlider`, `Dropdown`, `Checkbox`, `HBox`/`VBox`), so Colab keeps the 7.x it ships.

`LiveCurves` is a `fit` callback that redraws the training curves while a run goes on, only
where a notebook front end can show it (JupyterLab, Colab); under nbval/nbconvert (static mode)
or in a terminal it stays quiet, and the notebook draws the final curves with
`resnet_edu.plots.plot_history` instead. It redraws at most every `every_s` seconds (and
after the run's last epoch): each redraw is a message of an image to the front end, and a
client that reads a cell's messages only once the cell has finished (nbval) loses those
beyond ZeroMQ's high-water mark of 1,000 queued messages, the cell's "idle" status with them,
and then fails the cell ("Timeout of 5 seconds exceeded waiting for output"). At one redraw
per epoch, a run of 500 short epochs sent more than that; a redraw takes a few tenths of a
second too, which a budgeted run pays out of its training time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from ..plots import plot_history
from ..runs import History
from ..runtime import live_widgets

# every notebook cell that shows widgets carries this line as a comment (tested)
NO_CONTROLS_HINT = ("No controls above the figure? Colab: Runtime → Restart session after the "
                    "set-up cell; JupyterLab: install jupyterlab_widgets.")


def _default(spec: Any) -> Any:
    """The starting value of an ipywidgets `interact` abbreviation."""
    if isinstance(spec, tuple):  # (min, max[, step]): start in the middle, on a step
        lo, hi = spec[0], spec[1]
        step = _step(spec)
        mid = lo + (hi - lo) / 2
        value = lo + round((mid - lo) / step) * step
        return type(lo)(value) if isinstance(lo, int) else value
    if isinstance(spec, (list, dict)):
        return next(iter(spec.values())) if isinstance(spec, dict) else spec[0]
    if hasattr(spec, "value"):  # a ready widget
        return spec.value
    return spec


def _step(spec: tuple) -> Any:
    lo, hi = spec[0], spec[1]
    return spec[2] if len(spec) > 2 else (1 if isinstance(lo, int) else (hi - lo) / 100)


def _check(name: str, spec: Any) -> None:
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3) or not all(isinstance(v, (int, float)) for v in spec):
            raise ValueError(f"control {name!r}: expected (min, max) or (min, max, step) "
                             f"numbers, got {spec!r}")
    elif isinstance(spec, (list, dict)):
        if not spec:
            raise ValueError(f"control {name!r}: expected a non-empty list or dict of "
                             f"options, got {spec!r}")
    elif not isinstance(spec, bool) and not hasattr(spec, "value"):
        raise TypeError(f"control {name!r}: expected a (min, max[, step]) tuple, a list or "
                        f"dict of options, a bool or a widget, got {type(spec).__name__}")


def _control(w: Any, name: str, spec: Any, value: Any) -> Any:
    """One ipywidgets control for an `interact`-style abbreviation, set to `value`."""
    if hasattr(spec, "value"):
        spec.value = value
        return spec
    label = {"description": name, "style": {"description_width": "initial"}}  # not cut short
    if isinstance(spec, bool):
        return w.Checkbox(value=bool(value), **label)
    if isinstance(spec, (list, dict)):
        return w.Dropdown(options=spec, value=value, **label)
    lo, hi, step = spec[0], spec[1], _step(spec)
    kind = w.IntSlider if all(isinstance(v, int) for v in (lo, hi, step)) else w.FloatSlider
    return kind(min=lo, max=hi, step=step, value=value, continuous_update=False,  # on release
                **label)


def interactive_figure(draw: Callable[..., Any], defaults: dict[str, Any] | None = None,
                       **controls: Any) -> None:
    """Show `draw(**values)` with a widget per control, or once with the defaults.

    Controls use ipywidgets' `interact` abbreviations: (min, max, step) for a slider, a
    list (or dict) for a dropdown, a bool for a checkbox. `defaults` overrides starting
    values.
    """
    for name, spec in controls.items():
        _check(name, spec)
    unknown = set(defaults or {}) - set(controls)
    if unknown:
        raise ValueError(f"defaults for {sorted(unknown)} name no control; the controls are "
                         f"{sorted(controls)}")
    values = {name: _default(spec) for name, spec in controls.items()}
    values.update(defaults or {})
    if not live_widgets():
        draw(**values)
        return
    import ipywidgets as w
    from IPython.display import display

    widgets = {name: _control(w, name, spec, values[name]) for name, spec in controls.items()}
    out = w.interactive_output(draw, widgets)  # draws once now, then on every change
    display(w.VBox([w.HBox(list(widgets.values()), layout=w.Layout(flex_flow="row wrap")),
                    out]))


def show_error(code: Callable[[], Any], expected: type[BaseException] = Exception,
               ) -> BaseException | None:
    """Run `code()`; print and return the expected exception (re-raise any other).

    The printed line is "<ExceptionType>: <message>", the same as the last line of a
    traceback, so a notebook can read it with the student. If nothing is raised, it says so.
    """
    try:
        code()
    except expected as e:
        print(f"{type(e).__name__}: {e}")
        return e
    print(f"No error: the code ran without raising {expected.__name__}.")
    return None


class LiveCurves:
    """A `fit` callback that redraws the curves in a live notebook after an epoch: at most
    every `every_s` seconds, and always after the first and the run's last epoch."""

    def __init__(self, enabled: bool | None = None, data: str = "",
                 every_s: float = 10.0) -> None:
        self.enabled = live_widgets() if enabled is None else enabled
        self.data = data  # the data set's name for the title, as in `plot_history`
        self.every_s = every_s
        self.redraws = 0
        self._handle: Any = None
        self._last = -math.inf

    def due(self, history: History) -> bool:
        """Whether the figure is redrawn after the epoch `history` ends with."""
        last_epoch = len(history.epochs) >= history.config.get("epochs", math.inf)
        return (self._handle is None or last_epoch
                or time.perf_counter() - self._last >= self.every_s)

    def __call__(self, history: History) -> None:
        if not self.enabled or not self.due(history):
            return
        import matplotlib.pyplot as plt
        from IPython.display import display

        fig = plot_history(history, data=self.data)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)  # shown through the display handle, not again at the cell's end
        self._last = time.perf_counter()
        self.redraws += 1
