"""Every notebook is also a RISE deck (jupyterlab-rise): slide metadata on every cell, one
slide per section, figures on their own (sub-)slide and small enough for the deck, exercises
as sub-slides and solutions skipped."""

import base64
import json
import struct
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
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
