"""The Colab set-up cell: one repository-URL constant, the same in every notebook and in the
Colab badges; it installs from that URL in Colab and does nothing anywhere else."""

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
URL = re.compile(r'^REPO_URL = "(https://github\.com/([\w.-]+/[\w.-]+))"', re.M)


def colab_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    (cell,) = [c for c in cells if c["cell_type"] == "code"
               and '"google.colab" in sys.modules' in "".join(c["source"])]
    return "".join(cell["source"])


def test_one_repository_url_in_every_notebook_and_its_badge():
    urls = {}
    for path in NOTEBOOKS:
        found = URL.findall(colab_cell(path))
        assert len(found) == 1, f"{path.name}: one REPO_URL = \"https://github.com/...\" line"
        urls[path.name] = found[0]
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        badge = f"https://colab.research.google.com/github/{found[0][1]}/blob/main/notebooks/"
        assert badge + path.name in header, f"{path.name}: the badge points at the same repository"
    assert len(set(urls.values())) == 1, urls
    (url, _repo), = set(urls.values())
    assert url in (ROOT / "README.md").read_text(), "the README names the repository"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("in_colab", [False, True])
def test_installs_from_the_url_in_colab_only(path, in_colab, monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append((a, k)))
    if in_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    namespace = {}
    exec(colab_cell(path), namespace)
    if not in_colab:
        assert calls == []
        return
    ((args, kwargs),) = calls
    assert args[0] == [sys.executable, "-m", "pip", "install", "-q",
                       f"resnet-edu @ git+{namespace['REPO_URL']}"]
    assert kwargs == {"check": True}
