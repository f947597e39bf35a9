"""`python3 tasks.py student OUT_DIR`: clean copies for live coding, with every cell, its slide
metadata and the collapsed solutions kept, and every output cleared."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_student_copies_clear_outputs_and_keep_everything_else(tasks, tmp_path):
    assert tasks.student(tmp_path) == 0
    copies = sorted((tmp_path / "notebooks").glob("*.ipynb"))
    assert [c.name for c in copies] == [n.name for n in NOTEBOOKS]
    for original, copy in zip(NOTEBOOKS, copies, strict=True):
        before, after = json.loads(original.read_text()), json.loads(copy.read_text())
        assert len(before["cells"]) == len(after["cells"])
        for a, b in zip(before["cells"], after["cells"], strict=True):
            assert a["source"] == b["source"] and a["cell_type"] == b["cell_type"]
            assert b["metadata"].get("slideshow") == a["metadata"].get("slideshow")
            if b["cell_type"] == "code":
                assert b["outputs"] == [] and b["execution_count"] is None
                assert "execution" not in b["metadata"]
        solutions = [c for c in after["cells"] if "".join(c["source"]).startswith("<details>")]
        assert len(solutions) == sum("".join(c["source"]).startswith("<details>")
                                     for c in before["cells"])
    assert any(c.get("outputs") for nb in NOTEBOOKS for c in json.loads(nb.read_text())["cells"]), \
        "the originals have outputs, so clearing them is tested"


def test_student_command_refuses_to_overwrite_the_series():
    run = subprocess.run([sys.executable, str(ROOT / "tasks.py"), "student", str(ROOT)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "must not be the repository" in run.stdout
