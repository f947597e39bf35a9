"""`python3 tasks.py site` builds the series as a static website from the committed outputs:
a contents page, one page per notebook with all of its figures, maths rendered by a local
MathJax, Colab links, and nothing loaded from the network."""

import base64
import json
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs_jupyter", reason="the docs extra builds the site")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def site(tasks, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    assert tasks.build_site(out, Path(sys.executable)) == 0
    return out


def png_outputs(path: Path) -> list[str]:
    pngs = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {}).get("image/png")
            if data:
                pngs.append("".join(data) if isinstance(data, list) else data)
    return pngs


def test_contents_page_links_every_notebook(site):
    index = (site / "index.html").read_text()
    for nb in NOTEBOOKS:
        assert f'href="{nb.stem}.html"' in index, nb.name
    assert 'href="teaching.html"' in index


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_page_has_its_figures(site, path):
    page = (site / f"{path.stem}.html").read_text()
    embedded = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', page)
    pngs = png_outputs(path)
    assert len(embedded) == len(pngs), "one <img> per PNG output"
    assert {base64.b64decode(e) for e in embedded} == {base64.b64decode(p) for p in pngs}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_pages_render_maths_and_link_to_colab_offline(site, path):
    page = (site / f"{path.stem}.html").read_text()
    assert ("https://colab.research.google.com/github/resnet-edu/resnet-edu/blob/main/notebooks/"
            + path.name) in page
    assert 'src="mathjax/MathJax.js?config=' in page
    remote = re.findall(r'<(?:script|link|img)[^>]*(?:src|href)="(https?://[^"]+)"', page)
    assert not remote, f"loaded from the network: {remote}"
    assert not re.search(r'href="\d\d_\w+\.ipynb"', page), "links between pages, not files"


def test_local_mathjax_is_there(site):
    assert (site / "mathjax" / "MathJax.js").is_file()
    assert (site / "mathjax" / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
