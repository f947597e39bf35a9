"""docs/teaching.md stays true to the notebooks and to the measured timings: every section it
names exists, every notebook has its plan, and every number in a plan's timing table is the
one stored in notebook_timings.json of the shipped results."""

import json
import re
from pathlib import Path

import pytest

from resnet_edu.locations import RESULTS_DIR

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "teaching.md").read_text()
TIMINGS = json.loads((RESULTS_DIR / "notebook_timings.json").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def headings(path: Path, levels=("## ", "### ")) -> list[str]:
    out = []
    for cell in json.loads(path.read_text())["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            out += [line.split(" ", 1)[1].strip() for line in text.splitlines()
                    if line.startswith(levels)]
    return out


def plan(number: str) -> str:
    match = re.search(rf"^## {number} · .*?(?=^## |\Z)", GUIDE, flags=re.M | re.S)
    assert match, f"no '## {number} · ...' plan in docs/teaching.md"
    return match.group(0)


def table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    head = next(i for i, r in enumerate(rows) if r.startswith("| section |"))
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[head + 1:]]


def test_every_section_the_guide_names_exists():
    refs = re.findall(r"\[(\d\d)\] “([^”]+)”", GUIDE)
    assert len(refs) >= 8, "the misconceptions table points at the correcting sections"
    for number, heading in refs:
        path = next(p for p in NOTEBOOKS if p.name.startswith(number))
        assert heading in headings(path), f"{path.name} has no section “{heading}”"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_has_a_plan(path):
    text = plan(path.name[:2])
    for part in ("**Learning goals.**", "**Live or stored.**", "**Discussion.**"):
        assert part in text, f"{path.name}: {part}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_lecture_plan_timings_are_the_measured_ones(path):
    rows = table(plan(path.name[:2]))
    *sections, total = rows
    names = [r[0] for r in sections]
    wanted = [h for h in headings(path, ("## ",)) if h != "References"]
    assert [n for n in names if n != "set-up"] == wanted, "one row per ## section, in order"
    minutes = [int(r[1]) for r in sections]
    assert total[0] == "**total**" and int(total[1]) == sum(minutes)
    for key, column in (("committed", 2), ("quick", 3)):
        measured = TIMINGS[key]["notebooks"].get(path.name)
        if measured is None:  # a run that did not finish is said so, not filled in
            assert {r[column] for r in rows} == {"not measured"}, key
            continue
        for name, row in zip(names, sections, strict=True):
            seconds = measured["sections_s"].get(name)
            assert row[column] == ("—" if seconds is None else f"{seconds:.1f}"), (key, name)
        assert total[column] == f"{measured['total_s']:.1f}", key
    assert path.name in TIMINGS["committed"]["notebooks"], "the default-settings timings"
