"""The project's own set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip if not r.startswith("-e")}
    assert {_name(r): r for r in listed} == {_name(r): r for r in wanted}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 tasks.py test" in readme and "python3 tasks.py test" in ci
    assert "python3 tasks.py lab" in readme


def test_constraints_pin_the_torch_pair_within_the_ranges():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().split()
                if "==" in line)
    assert set(pins) == {"torch", "torchvision"}
    ranges = {_name(r): Requirement(r).specifier
              for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
              ["dependencies"]}
    for name, version in pins.items():
        assert version in ranges[name], f"{name}=={version} is outside {ranges[name]}"


def test_every_notebook_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"notebooks/{nb.name}" in readme, f"{nb.name} is missing from README's table"


def test_every_module_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    package = ROOT / "resnet_edu"
    names = [f"resnet_edu/{p.name}" for p in sorted(package.glob("*.py"))
             if p.name != "__init__.py"]
    names += [f"resnet_edu/{p.name}/" for p in sorted(package.iterdir())
              if (p / "__init__.py").is_file()]
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"modules missing from README's package table: {missing}"
