"""The project's own set-up files agree with each other."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


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


def _colab_pins() -> dict[str, str]:
    text = (ROOT / "constraints-colab.txt").read_text()
    pins = dict(line.split("==") for line in text.splitlines()
                if line and not line.startswith("#"))
    pins["python"] = re.search(r"^# python: (\S+)$", text, re.M).group(1)
    return pins


def test_the_lowest_versions_the_package_accepts_are_the_ones_tested():
    """Each lower bound in pyproject.toml is what test-colab installs (Colab's stack), and
    requires-python is the Python of the test command's .venv (3.11), so no declared range
    admits a version no test has run."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _colab_pins()
    for requirement in project["dependencies"]:
        req = Requirement(requirement)
        (lowest,) = [s.version for s in req.specifier if s.operator == ">="]
        assert req.name in pins and Version(pins[req.name]) == Version(lowest), (
            f"{req.name}>={lowest} in pyproject.toml, but test-colab tests "
            f"{req.name}=={pins.get(req.name)}: raise the bound or move the pin")
    # the lowest Python is the one CI's test command runs (this machine kind's python3, 3.11);
    # Colab's is newer and within the range too
    assert project["requires-python"] == ">=3.11"
    assert tuple(map(int, pins["python"].split("."))) >= (3, 11)


def test_ci_runs_the_colab_stack_after_the_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("python3 tasks.py test ||") < ci.index("python3 tasks.py test-colab ||")
    readme = (ROOT / "README.md").read_text()
    assert "python3 tasks.py test-colab" in readme and "constraints-colab.txt" in readme


def test_ci_runs_every_notebook_at_its_default_settings_once(monkeypatch):
    """`test-defaults` runs nbval over notebooks/ with quick mode off even where CI is set
    (CI switches quick mode on), and .ci/run calls it after the other two."""
    import tasks
    from resnet_edu.runtime import quick_mode

    calls = []
    monkeypatch.setattr(tasks, "setup", lambda: None)
    monkeypatch.setattr(tasks.subprocess, "call", lambda cmd, cwd, env: calls.append((cmd, env)))
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("RESNET_EDU_QUICK", "1")
    tasks.test_defaults([])
    (command, env), = calls
    assert command[-2:] == ["--nbval-lax", "notebooks"]
    monkeypatch.delenv("CI")
    monkeypatch.setenv("RESNET_EDU_QUICK", env["RESNET_EDU_QUICK"])
    assert "CI" not in env and not quick_mode()  # what the notebooks' kernels will see
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.index("tasks.py test-colab ||") < ci.index("python3 tasks.py test-defaults ||")


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
