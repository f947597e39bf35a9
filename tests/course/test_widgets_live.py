"""Live widgets: the controls `interactive_figure` builds and the redraws they trigger.

These run in the test environment (ipywidgets 8) and again under ipywidgets 7.7 through
tests/course/test_widgets_majors.py, which sets RESNET_EDU_EXPECT_IPYWIDGETS to the major it put
first on the path.
"""

import os

import ipywidgets
import pytest

from resnet_edu.course import widgets


@pytest.fixture
def live(monkeypatch):
    monkeypatch.setenv("RESNET_EDU_STATIC", "0")
    monkeypatch.setenv("CI", "true")  # forcing live mode wins over CI
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **kw: shown.extend(objs))
    return shown


def _controls(box):
    row, out = box.children
    assert isinstance(out, ipywidgets.Output)
    return {c.description: c for c in row.children}


def test_the_expected_ipywidgets_major_is_imported():
    expected = os.environ.get("RESNET_EDU_EXPECT_IPYWIDGETS")
    if expected is None:
        pytest.skip("no major requested (set by tests/course/test_widgets_majors.py)")
    assert ipywidgets.__version__.split(".")[0] == expected, ipywidgets.__file__


def test_live_mode_decision(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("RESNET_EDU_STATIC", "0")
    assert widgets.live_widgets()  # forced, even under CI and without a kernel
    monkeypatch.setenv("RESNET_EDU_STATIC", "1")
    monkeypatch.delenv("CI")
    assert not widgets.live_widgets()
    monkeypatch.delenv("RESNET_EDU_STATIC")
    assert not widgets.live_widgets()  # no kernel here, so nothing could show widgets


def test_controls_match_their_abbreviations_and_start_at_the_defaults(live):
    calls = []
    widgets.interactive_figure(
        lambda depth, scale, kind, bn: calls.append((depth, scale, kind, bn)),
        depth=(2, 50, 4), scale=(0.5, 1.5, 0.25), kind=["plain", "residual"], bn=True,
        defaults={"bn": False},
    )
    (box,) = live
    c = _controls(box)
    assert isinstance(c["depth"], ipywidgets.IntSlider)
    assert (c["depth"].min, c["depth"].max, c["depth"].step) == (2, 50, 4)
    assert isinstance(c["scale"], ipywidgets.FloatSlider)
    assert isinstance(c["kind"], ipywidgets.Dropdown) and list(c["kind"].options) == [
        "plain", "residual"]
    assert isinstance(c["bn"], ipywidgets.Checkbox)
    assert not c["depth"].continuous_update and not c["scale"].continuous_update
    assert calls == [(26, 1.0, "plain", False)]  # drawn once, with the same values as static


def test_every_control_redraws_with_its_new_value(live):
    calls = []
    widgets.interactive_figure(lambda depth, kind, bn: calls.append((depth, kind, bn)),
                               depth=(2, 10, 2), kind=["plain", "residual"], bn=True)
    c = _controls(live[0])
    c["depth"].value = 10
    c["kind"].value = "residual"
    c["bn"].value = False
    assert calls == [(6, "plain", True), (10, "plain", True), (10, "residual", True),
                     (10, "residual", False)]


def test_bad_controls_are_refused_with_what_was_expected(live):
    with pytest.raises(TypeError, match="expected a \\(min, max\\[, step\\]\\) tuple"):
        widgets.interactive_figure(lambda n: None, n="many")
    with pytest.raises(ValueError, match="non-empty list"):
        widgets.interactive_figure(lambda n: None, n=[])
    with pytest.raises(ValueError, match="name no control"):
        widgets.interactive_figure(lambda n: None, n=(1, 3), defaults={"m": 2})
    assert live == []
