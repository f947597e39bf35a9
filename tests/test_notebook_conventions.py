"""Every notebook keeps the series' shape (CONTRIBUTING.md): badge, Colab cell, stored
outputs from a real run, no stored errors, exercises with solutions, summary, references."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
COLAB_BADGE = "https://colab.research.google.com/github/resnet-edu/resnet-edu/blob/main/notebooks/"


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_header_badge_and_colab_cell(path):
    nb = cells(path)
    assert nb[0]["cell_type"] == "markdown" and source(nb[0]).startswith("# ")
    assert COLAB_BADGE + path.name in source(nb[0]), "Open-in-Colab badge for this file"
    first_code = next(c for c in nb if c["cell_type"] == "code")
    assert '"google.colab" in sys.modules' in source(first_code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_and_without_errors(path):
    code = [c for c in cells(path) if c["cell_type"] == "code" and source(c).strip()]
    assert all(c["execution_count"] is not None for c in code), "re-run and save the notebook"
    counts = [c["execution_count"] for c in code]
    assert counts == sorted(counts), "outputs come from one top-to-bottom run"
    for c in code:
        assert not any(o["output_type"] == "error" for o in c["outputs"]), source(c)[:80]
        for o in c["outputs"]:
            assert "image/svg+xml" not in o.get("data", {}), "figures are stored as PNG"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_summary_and_references(path):
    text = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    assert "## Summary" in text and "## References" in text
    if not path.name.startswith("00"):
        assert "<details>" in text, "exercises come with collapsible solutions"
