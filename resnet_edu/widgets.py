"""Interactive figures for live teaching that degrade to one static figure.

In JupyterLab or Colab, `interactive_figure(draw, depth=(2, 60, 2), ...)` shows ipywidgets
controls and redraws on every change. In static mode (nbval, nbconvert, CI, or
`RESNET_EDU_STATIC=1`) it draws once with the default values, so the cell still shows
the figure and "Run All" never waits on a front end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .runtime import _flag


def live_widgets() -> bool:
    """True when a notebook front end can show widgets (not under CI or static mode)."""
    if _flag("RESNET_EDU_STATIC") or _flag("CI"):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    # a kernel (JupyterLab, Colab, VS Code) has one; a plain IPython terminal does not
    return getattr(get_ipython(), "kernel", None) is not None


def _default(spec: Any) -> Any:
    """The starting value of an ipywidgets `interact` abbreviation."""
    if isinstance(spec, tuple):  # (min, max[, step]): start in the middle, on a step
        lo, hi = spec[0], spec[1]
        step = spec[2] if len(spec) > 2 else (1 if isinstance(lo, int) else (hi - lo) / 100)
        mid = lo + (hi - lo) / 2
        value = lo + round((mid - lo) / step) * step
        return type(lo)(value) if isinstance(lo, int) else value
    if isinstance(spec, (list, dict)):
        return next(iter(spec.values())) if isinstance(spec, dict) else spec[0]
    if hasattr(spec, "value"):  # a ready widget
        return spec.value
    return spec


def interactive_figure(draw: Callable[..., Any], defaults: dict[str, Any] | None = None,
                       **controls: Any) -> None:
    """Show `draw(**values)` with a widget per control, or once with the defaults.

    Controls use ipywidgets' `interact` abbreviations: (min, max, step) for a slider, a
    list for a dropdown, a bool for a checkbox. `defaults` overrides starting values.
    """
    values = {name: _default(spec) for name, spec in controls.items()}
    values.update(defaults or {})
    if not live_widgets():
        draw(**values)
        return
    import ipywidgets as w
    from IPython.display import display

    ui = w.interactive(draw, **controls)
    for control in ui.children[:-1]:  # the last child is the output area
        if control.description in values:
            control.value = values[control.description]
        if hasattr(control, "continuous_update"):
            control.continuous_update = False  # redraw on release, not on every pixel
    display(ui)
