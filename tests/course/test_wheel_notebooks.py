"""The notebooks run from an installed wheel, as in Colab: only the package, no checkout.

The wheel is built offline from a copy of the sources and installed with `pip install
--no-deps --target`; only `notebooks/*.ipynb` (and nbval's `sanitize.cfg`) are copied into
an empty folder, and nbval runs them there with PYTHONPATH pointing at the installed copy
and the user cache in a temporary folder. A generated first notebook checks, inside the
kernel, that `resnet_edu` and its sample and results come from the installed copy and that
downloads and training runs would go to the user cache. Afterwards nothing new may be in
the installed package (byte-code caches aside) and notebook 04's run must be in the cache.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
CHECK = """\
import os
from pathlib import Path

import resnet_edu
from resnet_edu.data import DEFAULT_DIR, SAMPLE_DIR
from resnet_edu.locations import checkout_root, results_file, run_dir

target = Path(os.environ["RESNET_EDU_TEST_TARGET"]).resolve()
cache = Path(os.environ["XDG_CACHE_HOME"]).resolve()
package = Path(resnet_edu.__file__).resolve()
print("resnet_edu from the installed copy:", package.is_relative_to(target))
print("no checkout around it:", checkout_root() is None)
print("sample and results from the installed copy:", SAMPLE_DIR.resolve().is_relative_to(target),
      results_file("degradation_cpu.json").resolve().is_relative_to(target))
print("downloads and runs go to the user cache:", DEFAULT_DIR.is_relative_to(cache),
      run_dir("04_smoke").is_relative_to(cache))
"""
CHECK_OUTPUT = """\
resnet_edu from the installed copy: True
no checkout around it: True
sample and results from the installed copy: True True
downloads and runs go to the user cache: True True
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, (f"{' '.join(args[:4])} ... failed:\n"
                                  f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    return done


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_notebooks_run_from_the_installed_wheel(tmp_path, tasks):
    source, wheels, target, run, cache = (tmp_path / d for d in
                                          ("src", "wheels", "target", "notebooks", "cache"))
    shutil.copytree(ROOT, source, ignore=tasks.not_sources)  # the sources alone
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels),
          str(source)])
    (wheel,) = wheels.glob("resnet_edu-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "resnet_edu"
    shipped = {p.relative_to(ROOT).as_posix() for p in (package / "shipped").rglob("*")
               if p.is_file() and not p.name.startswith(".")}
    assert "resnet_edu/shipped/weights/resnet20.pt" in shipped  # the listing found them
    assert shipped <= names, f"shipped files missing from the wheel: {sorted(shipped - names)}"
    top = ("data", "tests", "bench", "notebooks", "runs")
    assert not any(n.split("/")[0] in top for n in names)
    _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)])
    installed = _files(target)

    run.mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy(nb, run)
    shutil.copy(ROOT / "notebooks" / "sanitize.cfg", run)
    (run / "pytest.ini").write_text(
        "[pytest]\nfilterwarnings = ignore::DeprecationWarning:jupyter_client.*\n")
    check = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        CHECK, execution_count=1,
        outputs=[nbformat.v4.new_output("stream", name="stdout", text=CHECK_OUTPUT)])])
    nbformat.write(check, run / "00_installed_package.ipynb")

    env = {k: v for k, v in os.environ.items() if k not in ("RESNET_EDU_DATA", "PYTHONPATH")}
    env.update(PYTHONPATH=str(target), XDG_CACHE_HOME=str(cache), RESNET_EDU_QUICK="1",
               RESNET_EDU_STATIC="1", RESNET_EDU_TEST_TARGET=str(target))
    notebooks = ["00_installed_package.ipynb", *sorted(
        p.name for p in run.glob("*.ipynb") if p.name != "00_installed_package.ipynb")]
    _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--nbval",
          "--nbval-current-env", "--nbval-sanitize-with", "sanitize.cfg", *notebooks],
         cwd=run, env=env, timeout=3600)

    assert _files(target) == installed, "the notebooks wrote into the installed package"
    # no full data set in an empty folder: notebook 04 trains on the sample, in its own folder
    assert (cache / "resnet-edu" / "runs" / "04_smoke_sample" / "checkpoint.pt").is_file()
