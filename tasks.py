"""The project's two commands, with nothing but Python 3.11+ and pip needed to run them.

    python3 tasks.py lab     # set up .venv (first time only) and open the series in JupyterLab
    python3 tasks.py test    # set up .venv (first time only) and run the whole test suite

and, to test Colab's stack (the versions in constraints-colab.txt, in .venv-colab/):

    python3 tasks.py test-colab   # every notebook from the installed wheel, and the unit tests

and, as an instructor runs the series before class (not quick; CI runs it too):

    python3 tasks.py test-defaults   # every notebook under nbval at its default settings

and, for contributors:

    python3 tasks.py notebooks [NOTEBOOK ...]   # re-run notebooks and save their outputs

and, for instructors (docs/teaching.md):

    python3 tasks.py slides            # JupyterLab for presenting the notebooks as RISE slides
    python3 tasks.py student OUT_DIR   # clean copies for live coding: outputs cleared
    python3 tasks.py site [OUT_DIR]    # the series as a static website (default build/site)

Set-up creates `.venv/` at the repository root, installs the package in editable mode with
its lab, test and docs extras, and pins torch/torchvision through `constraints.txt`. It records a
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
# that tests put first on PYTHONPATH to run the widget tests under both majors. It also holds
# ipywidgets 7's JupyterLab front end (jupyterlab_widgets 1.1), which the slides need: the
# RISE slideshow (jupyterlab-rise 0.43) cannot load ipywidgets 8's front end, which asks for
# a JupyterLab module the slideshow does not provide, so widgets there show as plain text
# (jupyterlab-contrib/rise issues 119 and 126).
IPYWIDGETS7 = VENV / "ipywidgets7"
IPYWIDGETS7_PINS = ("ipywidgets==7.7.1", "jupyterlab_widgets==1.1.11")
IPYWIDGETS7_FRONT_END = (IPYWIDGETS7 / "share" / "jupyter" / "labextensions" / "@jupyter-widgets"
                         / "jupyterlab-manager")
INPUTS = ("pyproject.toml", "constraints.txt")


def _fingerprint() -> str:
    h = hashlib.sha256(sys.version.encode())
    for name in INPUTS:
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def setup() -> None:
    """Create .venv and install the project into it, unless it is already up to date."""
    if STAMP.exists() and STAMP.read_text() == _fingerprint() and PY.exists():
        if not IPYWIDGETS7_FRONT_END.is_dir():
            _install_ipywidgets7()
        return
    if not PY.exists():
        print(f"Creating virtual environment in {VENV.name}/ ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("Installing resnet-edu and its dependencies (first time: a few minutes) ...", flush=True)
    subprocess.run(
        [str(PY), "-m", "pip", "install", "--disable-pip-version-check",
         "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[lab,test,docs]"],
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

    print(f"Installing {' and '.join(IPYWIDGETS7_PINS)} beside .venv (widget tests, slides)"
          " ...", flush=True)
    report = subprocess.run(
        [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--dry-run", "-q",
         "--report", "-", *IPYWIDGETS7_PINS], check=True, capture_output=True, text=True).stdout
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


def slides_env() -> dict[str, str]:
    """What `slides` adds to the environment: JupyterLab finds ipywidgets 7's front end first,
    and kernels import ipywidgets 7, so widgets stay live in the RISE slideshow."""
    paths = [str(IPYWIDGETS7), os.environ.get("PYTHONPATH", "")]
    return {"JUPYTER_PATH": os.pathsep.join(filter(None, [str(IPYWIDGETS7 / "share" / "jupyter"),
                                                          os.environ.get("JUPYTER_PATH", "")])),
            "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def slides() -> int:
    """JupyterLab for presenting: Run All, then the notebook toolbar's RISE button."""
    setup()
    return subprocess.call(lab_command(), cwd=ROOT, env=dict(os.environ, **slides_env()))


def test(extra: list[str]) -> int:
    """ruff, then pytest (unit tests, every notebook under nbval, the notebooks from a built
    wheel). Quick settings always, with or without CI set; no download, no full data set."""
    setup()
    env = dict(os.environ, RESNET_EDU_STATIC="1", PYTHONHASHSEED="0", RESNET_EDU_QUICK="1",
               IPYTHONDIR=str(kernel_profile(VENV)))  # deprecations are errors in kernels too
    env.pop("RESNET_EDU_DATA", None)  # the tests use the shipped sample, whatever is set here
    rc = subprocess.call([str(PY), "-m", "ruff", "check", "."], cwd=ROOT, env=env)
    # two workers, each test file (and each notebook) whole on one of them: while one waits
    # (a kernel or JupyterLab starting, a wheel building, a browser) the other computes
    workers = ["-n", "2", "--dist", "loadfile"] if not extra else []
    if workers:  # one thread per worker and per notebook kernel: with two workers on two
        # cores, two threads each oversubscribe the CPU, which slows torch several-fold
        env.setdefault("OMP_NUM_THREADS", "1")
    rc |= subprocess.call([str(PY), "-m", "pytest", *workers, *extra], cwd=ROOT, env=env)
    return rc


def test_defaults(extra: list[str]) -> int:
    """Every notebook under nbval at its default settings, as an instructor runs the series
    before class: quick mode off (even where CI is set), static widgets, the full data set
    where it is in data/ or RESNET_EDU_DATA, else the shipped sample (as on CI: notebook 04
    then trains the epochs the sample is worth, `resnet_edu.recipe.SAMPLE_EPOCHS`)."""
    setup()
    env = dict(os.environ, RESNET_EDU_STATIC="1", PYTHONHASHSEED="0", RESNET_EDU_QUICK="0",
               IPYTHONDIR=str(kernel_profile(VENV)))
    env.pop("CI", None)  # CI would switch quick mode on
    return subprocess.call([str(PY), "-m", "pytest", "--nbval-lax", "notebooks", *extra],
                           cwd=ROOT, env=env)


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


def student(out: Path) -> int:
    """Write student copies to OUT/notebooks/: same cells and slide metadata, outputs and
    counts cleared, solutions left in their collapsed <details> cells. Needs only the standard
    library. The stored results they plot ship inside the package, so nothing goes beside them.
    """
    import json

    if out.resolve() in (ROOT, ROOT / "notebooks"):
        print(f"student: OUT_DIR must not be the repository or its notebooks/ (got {out})")
        return 2
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            cell["metadata"].pop("execution", None)
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
            elif isinstance(cell["source"], list):
                cell["source"] = [line.replace("<details open>", "<details>")
                                  for line in cell["source"]]
        (out / "notebooks" / path.name).write_text(
            json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"student copies in {out / 'notebooks'}")
    return 0


COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = (  # drawn here so that the badge shows on a site opened without a network
    '<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" '
    'aria-label="Open in Colab"><rect width="117" height="20" rx="3" fill="#444"/>'
    '<rect x="0" width="30" height="20" rx="3" fill="#f9ab00"/>'
    '<text x="15" y="14" font-family="Verdana,sans-serif" font-size="11" fill="#fff" '
    'text-anchor="middle">CO</text><text x="73" y="14" font-family="Verdana,sans-serif" '
    'font-size="11" fill="#fff" text-anchor="middle">Open in Colab</text></svg>\n')


def build_site(out: Path, python: Path) -> int:
    """Build the website from the committed outputs (nothing is executed), offline, with
    `python` (an interpreter that has the docs extra).

    mkdocs.yml reads build/site-src/, which this stages: the notebooks, docs/*.md, a contents
    page made from the notebooks' titles, and MathJax from the jupyter-server-mathjax package
    (so maths renders without a network). Links between notebooks become links between
    pages, and the Colab badge image is a local copy (its link still goes to Colab)."""
    import json
    import shutil

    src = ROOT / "build" / "site-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    rows = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(path, src / path.name)
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        title = "".join(cells[0]["source"]).splitlines()[0].lstrip("# ").strip()
        rows.append(f"- [{title}]({path.stem}.ipynb)")
    for md in sorted((ROOT / "docs").glob("*.md")):
        shutil.copy2(md, src / md.name)
    (src / "index.md").write_text(
        "# Contents\n\nResidual networks, derived, measured and trained. Each page is a "
        "notebook with the outputs of its last full run; the *Open in Colab* badge at the top "
        "of each runs it live.\n\n" + "\n".join(rows)
        + "\n\nFor instructors: [the teaching guide](teaching.md).\n", encoding="utf-8")
    mathjax = subprocess.run(
        [str(python), "-c", "import jupyter_server_mathjax, pathlib; "
         "print(pathlib.Path(jupyter_server_mathjax.__file__).parent / 'static')"],
        check=True, capture_output=True, text=True).stdout.strip()
    shutil.copytree(mathjax, src / "mathjax")
    (src / "colab-badge.svg").write_text(LOCAL_BADGE, encoding="utf-8")
    out = out.resolve()
    rc = subprocess.call([str(python), "-m", "mkdocs", "build", "--clean", "--quiet",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)], cwd=ROOT)
    if rc != 0:
        return rc
    for page in out.glob("*.html"):
        text = page.read_text(encoding="utf-8").replace(COLAB_BADGE, "colab-badge.svg")
        for nb in (ROOT / "notebooks").glob("*.ipynb"):
            text = text.replace(f'href="{nb.name}', f'href="{nb.stem}.html')
        page.write_text(text, encoding="utf-8")
    print(f"site in {out} (open {out / 'index.html'})")
    return 0


def site(out: Path) -> int:
    setup()
    return build_site(out, PY)


# Google Colab's stack: one list, constraints-colab.txt, whose "# python: X.Y" line names
# Colab's Python. The test tools are not Colab's; they only run the tests there.
VENV_COLAB = ROOT / ".venv-colab"
COLAB_PINS = ROOT / "constraints-colab.txt"
COLAB_TOOLS = ("pytest>=8.0", "pytest-xdist>=3.5", "nbval>=0.11", "setuptools>=68", "wheel")
# unit tests that need what Colab lacks (JupyterLab, a browser, the docs or the lab extras), or
# that build a wheel themselves; every other test file runs on Colab's stack
COLAB_SKIPPED_TESTS = ("test_browser.py", "test_packaging.py", "test_site.py", "test_slides.py",
                       "test_locations.py", "test_wheel_notebooks.py")
# Deprecation warnings are errors in the tests, on both stacks, in pytest (tests/conftest.py)
# and inside every notebook kernel (an IPython start-up file, below): ours, such as a tensor
# handed to matplotlib (numpy 2 asks its __array__ for a copy keyword), are bugs to fix. Those
# raised inside the Jupyter stack's, IPython's and matplotlib's own modules are theirs to fix
# (ipykernel 6.17 parses a date Python 3.13 deprecates; matplotlib 3.10.0 calls pyparsing
# names that pyparsing 3.3 renamed, so pyparsing warns): they are ignored by module, never
# globally.
THEIR_DEPRECATIONS = (r"(ipykernel|ipywidgets|jupyter_client|jupyter_core|jupyter_server|"
                      r"nbclient|nbformat|nbval|zmq|traitlets|comm|debugpy|IPython|"
                      r"matplotlib_inline|matplotlib\._fontconfig_pattern|matplotlib\._mathtext|pyparsing)"
                      r"(\.|$)")
KERNEL_WARNINGS = f"""\
# Written by tasks.py for test runs: in a notebook kernel a DeprecationWarning is an error,
# except those raised inside the Jupyter stack's own modules (THEIR_DEPRECATIONS there).
import warnings

warnings.filterwarnings("error", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning, module={THEIR_DEPRECATIONS!r})
"""


def pytest_warning_filters() -> list[str]:
    """The same rule as `filterwarnings` lines for pytest (later lines win)."""
    return ["error::DeprecationWarning", f"ignore::DeprecationWarning:{THEIR_DEPRECATIONS}"]


def kernel_profile(venv: Path) -> Path:
    """An IPYTHONDIR whose start-up file applies the warning rule in every kernel started
    with it (a start-up file runs after the kernel is up, so Jupyter's own start-up is not
    affected)."""
    ipython = venv / "ipython-test"
    startup = ipython / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-deprecations-are-errors.py").write_text(KERNEL_WARNINGS)
    return ipython


def colab_python() -> str:
    """The Python version Colab runs, from constraints-colab.txt's "# python: X.Y" line."""
    for line in COLAB_PINS.read_text().splitlines():
        if line.startswith("# python:"):
            return line.split(":", 1)[1].strip()
    raise SystemExit(f"{COLAB_PINS.name} has no '# python: X.Y' line")


def find_python(version: str) -> str | None:
    """An interpreter of `version` on this machine (pythonX.Y on PATH, or pyenv's), or None."""
    import glob
    import shutil

    candidates = [shutil.which(f"python{version}"),
                  *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python"))),
                  *sorted(glob.glob(f"/usr/local/bin/python{version}"))]
    for exe in filter(None, candidates):
        done = subprocess.run(
            [exe, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip() == version:
            return exe
    return None


FULL_DATA = {"cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"}  # as in .gitignore


def not_sources(folder: str, names: list[str]) -> set[str]:
    """For `shutil.copytree(ROOT, ..., ignore=not_sources)`: what a clean checkout would not
    hold (the environments, build leftovers, a full CIFAR-10 in data/), so that a wheel is
    built from the sources alone."""
    import shutil

    skip = shutil.ignore_patterns(".git", ".venv*", "runs", "build", "dist", "*.egg-info",
                                  "__pycache__", ".*_cache", ".ipynb_checkpoints")(folder, names)
    return skip | (FULL_DATA & set(names) if Path(folder) == ROOT / "data" else set())


def setup_colab() -> Path:
    """Create .venv-colab with Colab's Python and its pinned stack, unless already up to date,
    then install the project's freshly built wheel beside the pins without changing them.
    Returns the environment's python."""
    import shutil
    import tempfile

    version = colab_python()
    py = VENV_COLAB / "bin" / "python"
    stamp = VENV_COLAB / ".resnet-edu-installed"
    fingerprint = hashlib.sha256(COLAB_PINS.read_bytes() + " ".join(COLAB_TOOLS).encode())
    fingerprint = fingerprint.hexdigest()
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    if not (stamp.exists() and stamp.read_text() == fingerprint and py.exists()):
        exe = find_python(version)
        if exe is None:
            raise SystemExit(
                f"test-colab needs Python {version}, Colab's, and none is on this machine: "
                f"install it (`pyenv install {version}`, `uv python install {version}`, or "
                f"your system's python{version} package) and run again.")
        shutil.rmtree(VENV_COLAB, ignore_errors=True)
        print(f"Creating {VENV_COLAB.name}/ with {exe} and Colab's stack ({COLAB_PINS.name}; "
              "first time: a few minutes) ...", flush=True)
        subprocess.run([exe, "-m", "venv", str(VENV_COLAB)], check=True)
        subprocess.run([*pip, "install", "-q", "-r", str(COLAB_PINS), "-c", str(COLAB_PINS),
                        *COLAB_TOOLS], check=True)
        stamp.write_text(fingerprint)
    with tempfile.TemporaryDirectory() as tmp:  # the wheel, built from a copy of the sources
        source = Path(tmp) / "src"
        shutil.copytree(ROOT, source, ignore=not_sources)
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        f"{tmp}/wheels", str(source)], check=True)
        (wheel,) = Path(tmp, "wheels").glob("resnet_edu-*.whl")
        # --no-deps: the pins stay as Colab has them; pip check then says whether the
        # package's declared ranges accept them
        subprocess.run([*pip, "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                       check=True)
    if subprocess.call([*pip, "check"]) != 0:
        raise SystemExit(f"pip check failed in {VENV_COLAB.name}/: the package's declared "
                         f"dependencies do not accept Colab's stack ({COLAB_PINS.name})")
    return py


def test_colab(extra: list[str]) -> int:
    """Colab's stack (constraints-colab.txt): every notebook copied into an empty folder and
    run there under nbval (quick settings, live widgets) from the installed wheel, then the
    unit tests against the same wheel. Deprecation warnings are errors (THEIR_DEPRECATIONS
    aside)."""
    import shutil
    import tempfile

    py = setup_colab()
    names = ("torch", "torchvision", "numpy", "matplotlib", "ipywidgets", "ipykernel")
    report = ("import sys, importlib; print('Colab stack: Python', sys.version.split()[0], "
              f"*(f'{{n}} {{importlib.import_module(n).__version__}}' for n in {names!r}))")
    print(subprocess.run([str(py), "-c", report], check=True, capture_output=True,
                         text=True).stdout.strip(), flush=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RESNET_EDU_DATA", "PYTHONPATH", "RESNET_EDU_STATIC")}
    env.update(RESNET_EDU_QUICK="1", RESNET_EDU_STATIC="0", PYTHONHASHSEED="0",
               OMP_NUM_THREADS="1", IPYTHONDIR=str(kernel_profile(VENV_COLAB)))
    bin_dir = str(VENV_COLAB / "bin")
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    workers = ["-n", "2", "--dist", "loadfile"]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "notebooks"  # an empty folder, as Colab has: the notebooks alone
        run.mkdir()
        for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
            shutil.copy(nb, run)
        (run / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n" + "".join(
            f"    {line}\n" for line in pytest_warning_filters()))
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        rc = subprocess.call([str(VENV_COLAB / "bin" / "pytest"), "-p", "no:cacheprovider",
                              "-q", "--nbval-lax", "--nbval-current-env", *workers, *extra,
                              "."], cwd=run, env=env)
    tests = [str(p) for p in sorted((ROOT / "tests").rglob("test_*.py"))
             if p.name not in COLAB_SKIPPED_TESTS]
    # the pytest script, not `python -m pytest`: the checkout's folder stays off sys.path,
    # so the tests import the installed wheel
    rc |= subprocess.call([str(VENV_COLAB / "bin" / "pytest"), "-p", "no:cacheprovider", "-q",
                           "-o", "addopts=-rs", *workers, *extra, *tests], cwd=ROOT, env=env)
    return rc


def main(argv: list[str]) -> int:
    if argv and argv[0] == "student" and len(argv) == 2:
        return student(Path(argv[1]))
    if argv and argv[0] == "site" and len(argv) <= 2:
        return site(Path(argv[1]) if len(argv) == 2 else ROOT / "build" / "site")
    if not argv or argv[0] not in {"lab", "slides", "test", "test-colab", "test-defaults",
                                   "setup", "notebooks"}:
        print(__doc__)
        return 2
    if argv[0] == "lab":
        return lab()
    if argv[0] == "slides":
        return slides()
    if argv[0] == "test":
        return test(argv[1:])
    if argv[0] == "test-colab":
        return test_colab(argv[1:])
    if argv[0] == "test-defaults":
        return test_defaults(argv[1:])
    if argv[0] == "notebooks":
        return notebooks([str(Path(p).resolve()) for p in argv[1:]])
    setup()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
