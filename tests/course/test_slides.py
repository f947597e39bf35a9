"""Every notebook is also a RISE deck (jupyterlab-rise): slide metadata on every cell, one
slide per section, figures on their own (sub-)slide and small enough for the deck, exercises
as sub-slides and solutions skipped."""

import base64
import json
import struct
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
SLIDE_TYPES = {"slide", "subslide", "fragment", "-", "skip", "notes"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"])


def slide_type(cell: dict) -> str:
    return cell["metadata"].get("slideshow", {}).get("slide_type", "<missing>")


def png_sizes(cell: dict) -> list[tuple[int, int]]:
    sizes = []
    for out in cell.get("outputs", []):
        data = out.get("data", {}).get("image/png")
        if data:
            raw = base64.b64decode("".join(data) if isinstance(data, list) else data)
            sizes.append(struct.unpack(">II", raw[16:24]))
    return sizes


def sections(cells: list[dict]) -> list[str]:
    return [source(c).splitlines()[0] for c in cells
            if c["cell_type"] == "markdown" and source(c).startswith("## ")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_cell_has_slide_metadata(path):
    cells = load(path)["cells"]
    missing = [i for i, c in enumerate(cells) if slide_type(c) not in SLIDE_TYPES]
    assert not missing, f"cells {missing} have no valid slideshow.slide_type"
    assert slide_type(cells[0]) == "slide", "the title opens the deck"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_slide_per_section_and_a_reasonable_count(path):
    cells = load(path)["cells"]
    for c in cells:
        if c["cell_type"] == "markdown" and source(c).startswith("## "):
            assert slide_type(c) == "slide", source(c).splitlines()[0]
    n_sections = len(sections(cells))
    slides = [slide_type(c) for c in cells].count("slide")
    subslides = [slide_type(c) for c in cells].count("subslide")
    assert slides == n_sections + 1, "the title plus one slide per ## section"
    assert n_sections + 1 <= slides + subslides <= 4 * (n_sections + 1), (slides, subslides)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_are_subslides_and_solutions_are_skipped(path):
    cells = load(path)["cells"]
    in_exercises = False
    for i, c in enumerate(cells):
        text = source(c)
        if c["cell_type"] == "markdown" and text.startswith("## "):
            in_exercises = "exercise" in text.splitlines()[0].lower()
            continue
        if c["cell_type"] == "markdown" and text.lstrip().startswith("<details>"):
            assert slide_type(c) == "skip", f"solution cell {i}"
        elif in_exercises:
            assert slide_type(c) in {"subslide", "-"}, f"exercise cell {i}: {slide_type(c)}"
            if c["cell_type"] == "markdown" and ("**Exercise" in text or "### Exercise" in text):
                assert slide_type(c) == "subslide", f"exercise prompt {i} opens a sub-slide"


# The deck is planned for a 1920x1080 CSS-pixel window: a 1280x720 screen at 67 % zoom.
WINDOW = (1920, 1080)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_figures_get_their_own_slide_and_fit_the_window(path):
    nb = load(path)
    assert nb["metadata"]["rise"]["start_slideshow_at"] == "beginning"
    width, height = WINDOW
    for i, c in enumerate(nb["cells"]):
        sizes = png_sizes(c)
        if not sizes and "interactive_figure(" not in source(c):
            continue
        assert slide_type(c) in {"slide", "subslide"}, f"figure cell {i} starts a slide"
        for w, h in sizes:
            assert w <= width and h <= height, f"cell {i}: {w}x{h} figure, {width}x{height} window"


def test_the_slides_get_ipywidgets_7_with_the_front_end_made_for_it(tasks):
    """pip pairs ipywidgets 7.7.1 with jupyterlab_widgets 3.x, ipywidgets 8's front end, unless
    told otherwise; the slides' overlay pins the 1.x front end that speaks ipywidgets 7's
    protocol, and `slides` puts both first on the paths JupyterLab and its kernels read."""
    import os
    from importlib.metadata import distributions

    if not (tasks.IPYWIDGETS7 / "ipywidgets").is_dir():
        pytest.skip(f"no ipywidgets 7 overlay in {tasks.IPYWIDGETS7} (python3 tasks.py setup)")
    found = {d.metadata["Name"].lower().replace("-", "_"): d.version
             for d in distributions(path=[str(tasks.IPYWIDGETS7)])}
    assert found["ipywidgets"].split(".")[0] == "7"
    assert found["jupyterlab_widgets"].split(".")[0] == "1", found
    # the lab extension inside: @jupyter-widgets/jupyterlab-manager 3.x speaks ipywidgets 7's
    # protocol (jupyterlab_widgets 3.x, for ipywidgets 8, carries 5.x)
    front_end = json.loads((tasks.IPYWIDGETS7_FRONT_END / "package.json").read_text())
    assert front_end["version"].split(".")[0] == "3", front_end["version"]
    env = tasks.slides_env()
    assert env["JUPYTER_PATH"].split(os.pathsep)[0] == str(tasks.IPYWIDGETS7 / "share" / "jupyter")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tasks.IPYWIDGETS7)
