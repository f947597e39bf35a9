"""The build step that puts the CIFAR-10 sample, the stored results and the small trained
nets inside the wheel.

Their one source is `data/cifar10-sample/`, `results/` and `weights/` at the top of the
repository; the
list is `SHIPPED` in `resnet_edu/locations.py`. Building a wheel (`pip install .`,
`pip install git+...`, `pip wheel .`) copies them into `resnet_edu/_shipped/` of the build
folder, where the installed package finds them through `importlib.resources`. An editable
install (`python3 tasks.py ...`) copies nothing: it reads the repository's folders directly.
Everything else about the package is in `pyproject.toml`.
"""

import importlib.util
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _locations():
    """resnet_edu/locations.py, loaded on its own (it needs only the standard library)."""
    path = ROOT / "resnet_edu" / "locations.py"
    spec = importlib.util.spec_from_file_location("_locations", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithShippedFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        loc = _locations()
        target = Path(self.build_lib) / loc.PACKAGE / loc.SHIPPED_DIR
        shutil.rmtree(target, ignore_errors=True)  # no stale files from an earlier build
        for name, (source, patterns) in loc.SHIPPED.items():
            for pattern in patterns:
                for src in sorted((ROOT / source).glob(pattern)):
                    if src.is_file():
                        dest = target / name / src.relative_to(ROOT / source)
                        self.mkpath(str(dest.parent))
                        self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
