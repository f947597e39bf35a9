"""Every notebook keeps the series' shape (CONTRIBUTING.md): badge, Colab cell, stored
outputs from a real run, no stored errors, exercises with solutions, summary, references."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
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


def tagged(nb: list[dict], tag: str) -> list[int]:
    return [i for i, c in enumerate(nb) if tag in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_student_writes_code_and_predicts_before_measuring(path):
    """At least two cells where the student writes code (tag "exercise") and one prediction
    (tag "prediction"), each left unanswered in the committed notebook, each followed by a
    check whose stored feedback says it is not answered yet."""
    nb = cells(path)
    exercises, predictions = tagged(nb, "exercise"), tagged(nb, "prediction")
    assert len(exercises) >= 2, "two cells where the student writes code"
    assert len(predictions) >= 1, "one prediction before the cell that measures it"
    for i in exercises + predictions:
        text = source(nb[i])
        assert nb[i]["cell_type"] == "code"
        assert "..." in text or "NotImplementedError" in text, f"left for the student: {text[:60]}"
        checks = [j for j in range(i, len(nb)) if nb[j]["cell_type"] == "code"
                  and re.search(r"^(print\()?check_\w+\(", source(nb[j]), flags=re.M)]
        assert checks, f"a check follows: {text[:60]}"
        stored = "".join("".join(o.get("text", ""))
                         + "".join(o.get("data", {}).get("text/plain", ""))
                         for o in nb[checks[0]]["outputs"])
        assert "Not yet" in stored, f"the committed run leaves it unanswered: {text[:60]}"
