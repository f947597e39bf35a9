"""The project's two commands, with nothing but Python 3.11+ and pip needed to run them.

    python3 tasks.py lab     # set up .venv (first time only) and open the series in JupyterLab
    python3 tasks.py test    # set up .venv (first time only) and run the whole test suite

and, for contributors:

    python3 tasks.py notebooks [NOTEBOOK ...]   # re-run notebooks and save their outputs

Set-up creates `.venv/` at the repository root, installs the package in editable mode with
its lab and test extras, and pins torch/torchvision through `constraints.txt`. It records a
fingerprint of those files, so a second run skips straight to the command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".resnet-edu-installed"
# ipywidgets 7.7 (what Colab ships) and the packages it needs that 8 does not, in a folder
# that tests put first on PYTHONPATH to run the widget tests under both majors
IPYWIDGETS7 = VENV / "ipywidgets7"
IPYWIDGETS7_PIN = "ipywidgets==7.7.1"
INPUTS = ("pyproject.toml", "constraints.txt")


def _fingerprint() -> str:
    h = hashlib.sha256(sys.version.encode())
    for name in INPUTS:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def setup() -> None:
    """Create .venv and install the project into it, unless it is already up to date."""
    if STAMP.exists() and STAMP.read_text() == _fingerprint() and PY.exists():
        if not (IPYWIDGETS7 / "ipywidgets").is_dir():
            _install_ipywidgets7()
        return
    if not PY.exists():
        print(f"Creating virtual environment in {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing resnet-edu and its dependencies (first time: a few minutes) ...", flush=True)
    subprocess.run(
        [str(PY), "-m", "pip", "install", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[lab,test]"],
        check=True,
    )
    _install_ipywidgets7()
    STAMP.write_text(_fingerprint())


def _install_ipywidgets7() -> None:
    """Put ipywidgets 7.7 and what it needs beyond .venv (ipython_genutils, ...) in IPYWIDGETS7.

    pip resolves the downgrade against .venv without doing it, and the distributions it
    would install go to the overlay folder, so .venv keeps ipywidgets 8.
    """
    import json
    import shutil

    print(f"Installing {IPYWIDGETS7_PIN} beside .venv for the widget tests ...", flush=True)
    report = subprocess.run(
        [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "-q",
         "--report", "-", IPYWIDGETS7_PIN], check=True, capture_output=True, text=True).stdout
    pins = [f"{item['metadata']['name']}=={item['metadata']['version']}"
            for item in json.loads(report)["install"]]
    shutil.rmtree(IPYWIDGETS7, ignore_errors=True)
    subprocess.run(
        [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps",
         "--target", str(IPYWIDGETS7), *pins], check=True)


FIRST_NOTEBOOK = "00_start_here.ipynb"
# JupyterLab defaults for this environment (a user's own settings still win): no start-up
# prompt asking whether to fetch Jupyter news, no update check, and each notebook starts its
# own kernel without a "Select Kernel" dialog when another notebook's kernel is running
LAB_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    "@jupyterlab/notebook-extension:tracker": {"autoStartDefaultKernel": True},
}


def lab_command(notebooks: Path = ROOT / "notebooks") -> list[str]:
    """The `jupyter lab` command line that opens `notebooks/` at the first notebook."""
    import json

    settings = VENV / "share" / "jupyter" / "lab" / "settings"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "overrides.json").write_text(json.dumps(LAB_OVERRIDES, indent=2) + "\n")
    args = [str(BIN / "jupyter"), "lab", f"--ServerApp.root_dir={notebooks}",
            f"--LabApp.default_url=/lab/tree/{FIRST_NOTEBOOK}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers often run as root; Jupyter refuses without it
    return args


def lab() -> int:
    setup()
    return subprocess.call(lab_command(), cwd=ROOT)


def test(extra: list[str]) -> int:
    """ruff, then pytest (unit tests, every notebook under nbval, the notebooks from a built
    wheel). Quick settings always, with or without CI set; no download, no full data set."""
    setup()
    env = dict(os.environ, RESNET_EDU_STATIC="1", PYTHONHASHSEED="0", RESNET_EDU_QUICK="1")
    env.pop("RESNET_EDU_DATA", None)  # the tests use the shipped sample, whatever is set here
    rc = subprocess.call([str(PY), "-m", "ruff", "check", "."], cwd=ROOT, env=env)
    rc |= subprocess.call([str(PY), "-m", "pytest", *extra], cwd=ROOT, env=env)
    return rc


def notebooks(paths: list[str]) -> int:
    """Execute notebooks in place (static widgets, as nbval runs them) to store outputs."""
    setup()
    env = dict(os.environ, RESNET_EDU_STATIC="1", PYTHONHASHSEED="0")
    paths = paths or sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    return subprocess.call(
        [str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--inplace",
         "--ExecutePreprocessor.timeout=3600", *paths],
        cwd=ROOT / "notebooks", env=env,
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"lab", "test", "setup", "notebooks"}:
        print(__doc__)
        return 2
    if argv[0] == "lab":
        return lab()
    if argv[0] == "test":
        return test(argv[1:])
    if argv[0] == "notebooks":
        return notebooks([str(Path(p).resolve()) for p in argv[1:]])
    setup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
