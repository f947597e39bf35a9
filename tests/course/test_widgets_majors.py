"""The widgets under both ipywidgets majors: 8 (this environment) and 7.7 (what Colab ships).

`python3 tasks.py setup` puts ipywidgets 7.7.1, and what it needs beyond this environment,
in `.venv/ipywidgets7/`. Each test here runs in a subprocess with that folder first on
PYTHONPATH (7) or without it (8). On Colab's stack (`python3 tasks.py test-colab`), where
ipywidgets 7 is the installed one, major 7 runs without the overlay and 8 is skipped.
"""

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = Path(sys.prefix) / "ipywidgets7"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAJORS = ["7", "8"]
INSTALLED = version("ipywidgets").split(".")[0]


def _env(major: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "CI"}}
    if major == "8" and INSTALLED == "7":
        pytest.skip("ipywidgets 7 is the installed major here (Colab's stack)")
    if major == "7" and INSTALLED != "7":
        if not (OVERLAY / "ipywidgets").is_dir():
            pytest.skip(f"no ipywidgets 7 overlay in {OVERLAY} (python3 tasks.py setup makes it)")
        env["PYTHONPATH"] = str(OVERLAY)
    env["RESNET_EDU_EXPECT_IPYWIDGETS"] = major
    return env


@pytest.mark.parametrize("major", MAJORS)
def test_widget_unit_tests_pass(major):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         *(str(ROOT / "tests" / "course" / name)
           for name in ("test_widgets_live.py", "test_runtime_widgets.py"))],
        cwd=ROOT, env=_env(major), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " skipped" not in run.stdout.splitlines()[-1], run.stdout[-1000:]


@pytest.mark.parametrize("major", MAJORS)
def test_every_notebook_widget_cell_builds_and_redraws(major):
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "course" / "widget_cells.py"),
                          *map(str, NOTEBOOKS)],
                         cwd=ROOT, env=_env(major), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {r["notebook"]: r for r in json.loads(run.stdout.splitlines()[-1])}
    with_widgets = {nb.name for nb in NOTEBOOKS if "interactive_figure(" in nb.read_text()
                    .replace("import interactive_figure", "")}
    assert {name for name, r in results.items() if r["cells_run"]} == with_widgets
    for name in sorted(with_widgets):
        r = results[name]
        assert r["ipywidgets"].split(".")[0] == major
        assert not r["errors"], f"{name}:\n" + "\n".join(r["errors"])
        assert r["controls"], f"{name}: no controls were built"
        for control, redraw in r["redraws"].items():
            assert redraw["drawn_with_it"], f"{name}: {control} -> {redraw}"
            assert redraw["figure_changed"], f"{name}: {control} did not change the figure"


def test_every_widget_cell_says_what_to_do_without_controls():
    from resnet_edu.course.widgets import NO_CONTROLS_HINT

    for nb in NOTEBOOKS:
        for cell in json.loads(nb.read_text())["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and "interactive_figure(" in src:
                assert f"# {NO_CONTROLS_HINT}\n" in src, f"{nb.name}: {src[:200]}"


def _requirement(name: str) -> Requirement:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(Requirement(d) for d in deps if Requirement(d).name == name)


def test_colab_keeps_its_ipywidgets_7(tmp_path):
    """Installing the package beside ipywidgets 7.7.1 keeps 7.7.1 (pip resolves offline)."""
    env = _env("7")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index",
         "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("resnet_edu-*.whl")
    assert _requirement("ipywidgets") in _metadata(wheel)
    installs = _dry_run(tmp_path, env, wheels, str(wheel))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # nothing else: ipywidgets untouched (on Colab's stack, where this very version is
    # installed already, pip plans nothing at all)
    assert installs in ({"resnet-edu": version}, {}), installs
    # the control: asking for ipywidgets 8 here would have to change it, and cannot offline
    with pytest.raises(AssertionError, match="ipywidgets"):
        _dry_run(tmp_path, env, wheels, "ipywidgets>=8")


def _dry_run(tmp_path: Path, env: dict, wheels: Path, requirement: str) -> dict[str, str]:
    """What `pip install requirement` would install, offline, in the environment `env` sees."""
    report = tmp_path / "report.json"
    plan = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--find-links",
         str(wheels), "--report", str(report), "-q", "--disable-pip-version-check",
         requirement],
        env=env, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"]
            for i in json.loads(report.read_text())["install"]}


def _metadata(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    return [Requirement(line.split(":", 1)[1]) for line in text.decode().splitlines()
            if line.startswith("Requires-Dist:")]
