"""The package's two layers: the library a learner reads, and `resnet_edu/course/`, what exists
because of the notebooks. Imports point from the course to the library only; the library's
functions each read in one sitting; the course's check modules are named by notebook."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "resnet_edu"
COURSE = PACKAGE / "course"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if COURSE not in p.parents)
LONGEST = 60  # lines of one function in the library


def imported_modules(path: Path) -> set[str]:
    """The absolute names of the modules a file imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = base[:len(base) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names |= {f"{module}.{a.name}" for a in node.names}  # `from . import course`
    return names


def test_the_library_never_imports_the_course():
    assert len(LIBRARY) > 20
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                                  if m.startswith("resnet_edu.course"))
                 for p in LIBRARY}
    assert not {k: v for k, v in offenders.items() if v}
    # the check can fail: a course module does import the library
    assert any(m.startswith("resnet_edu.") and not m.startswith("resnet_edu.course")
               for m in imported_modules(COURSE / "nb04_training.py"))


def test_no_library_function_is_longer_than_a_screen():
    long = []
    for path in LIBRARY:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, f"library functions over {LONGEST} lines: {long}"


def test_each_notebook_imports_the_checks_named_for_it():
    notebooks = {p.name[:2]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    modules = {p.name[2:4]: p.stem for p in COURSE.glob("nb[0-9][0-9]_*.py")}
    assert set(modules) <= set(notebooks), "a check module named for no notebook"
    for number, path in notebooks.items():
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                       if c["cell_type"] == "code")
        used = set(re.findall(r"resnet_edu\.course\.(nb\d\d)_\w+", code))
        assert used <= {f"nb{number}"}, f"{path.name} imports the checks of {sorted(used)}"
        assert used == {f"nb{number}"} or number not in modules, path.name
