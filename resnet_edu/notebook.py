"""Notebook helpers: interactive figures that degrade to one static figure, and expected
errors shown without halting "Run All".

In JupyterLab or Colab, `interactive_figure(draw, depth=(2, 60, 2), ...)` shows ipywidgets
controls and redraws on every change. In static mode (nbval, nbconvert, CI, or
`RESNET_EDU_STATIC=1`) it draws once with the default values, so the cell still shows
the figure and "Run All" never waits on a front end. `RESNET_EDU_STATIC=0` forces live
widgets, even under CI (the browser test uses it).

A cell that raises stops "Run All" in JupyterLab and Colab, so notebooks run code that is
meant to fail through `show_error`, which catches the one exception it expects and prints it.

Only API common to ipywidgets 7.6+ and 8 is used (`interactive_output`, `IntSlider`,
`FloatSlider`, `Dropdown`, `Checkbox`, `HBox`/`VBox`), so Colab keeps the 7.x it ships.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .runtime import live_widgets

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
