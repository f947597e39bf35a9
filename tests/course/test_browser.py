"""JupyterLab in a real browser, as students and instructors use it.

Starts JupyterLab the way `python3 tasks.py lab` does (on a temporary copy of the notebooks,
token-less, on a free localhost port) with live widgets and the quick settings, and drives it
in headless Chromium through playwright. For each notebook: Run All from the menu, then every
code cell has run with no error output, every widget has rendered, and changing a control
re-draws its figure. One screenshot per notebook goes to tests/screenshots/. Then one notebook
is presented as RISE slides, in JupyterLab started as `python3 tasks.py slides` starts it, and
a control of its interactive figure is moved on the slide.

Needs a Chromium (`apt-get install chromium`, or RESNET_EDU_CHROMIUM=/path/to/chrome);
without one the test is skipped and says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "tests" / "screenshots"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
RUN_TIMEOUT_S = 1500  # one notebook's Run All: minutes on 2 idle cores, far more on a busy machine
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _chromium() -> str | None:
    named = os.environ.get("RESNET_EDU_CHROMIUM")
    if named:
        return named if Path(named).is_file() else None
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clear_outputs(source: Path, target: Path) -> None:
    nb = json.loads(source.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    target.write_text(json.dumps(nb, indent=1))


@contextlib.contextmanager
def _serve_lab(tasks, tmp: Path, **extra_env: str):
    """(base URL, notebook folder) of a JupyterLab started as `python3 tasks.py lab` does."""
    if _chromium() is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set RESNET_EDU_CHROMIUM): "
                    "the JupyterLab browser test is skipped")
    pytest.importorskip("playwright", reason="playwright is not installed (the test extra)")
    (tmp / "notebooks").mkdir()
    for nb in NOTEBOOKS:  # without stored outputs, so that every output seen is from this run
        _clear_outputs(nb, tmp / "notebooks" / nb.name)
    settings = tmp / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # every cell in the page, so that the test sees all of them without scrolling
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = dict(os.environ, RESNET_EDU_STATIC="0", RESNET_EDU_QUICK="1", CI="true",
               PYTHONHASHSEED="0", JUPYTERLAB_SETTINGS_DIR=str(tmp / "user-settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_RUNTIME_DIR=str(
                   tmp / "runtime"), **extra_env)
    command = [*tasks.lab_command(tmp / "notebooks"), "--no-browser", "--ip=127.0.0.1",
               f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
               "--ServerApp.port_retries=0"]
    log = open(tmp / "jupyter.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp / "jupyter.log").read_text()[-3000:]
                time.sleep(0.5)
        yield base, tmp / "notebooks"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def lab(tasks, tmp_path_factory):
    with _serve_lab(tasks, tmp_path_factory.mktemp("lab")) as served:
        yield served


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # an empty user-data-dir
            executable_path=_chromium(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()


def _wait_for_lab(page) -> None:
    """Until the notebook is open and its kernel has started and is idle."""
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    page.wait_for_function("() => document.querySelector('#jp-main-statusbar')?.innerText"
                           ".includes('(ipykernel) | Idle')", timeout=180_000, polling=500)


def _popups(page) -> list[str]:
    return page.eval_on_selector_all(".Toastify__toast, .jp-Dialog",
                                     "els => els.map(e => e.innerText)")


def test_lab_opens_the_first_notebook_without_popups(lab, page):
    base, _ = lab
    page.goto(f"{base}/")  # where `python3 tasks.py lab` points the browser
    _wait_for_lab(page)
    page.wait_for_timeout(3000)  # the news prompt, when on, shows up soon after start-up
    current = page.inner_text(".jp-mod-current .lm-TabBar-tabLabel, "
                              ".lm-TabBar-tab.jp-mod-current .lm-TabBar-tabLabel")
    assert current == "00_start_here.ipynb"
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lab_start.png"))
    assert _popups(page) == []
    _shut_down_kernels(page, base)


def _shut_down_kernels(page, base: str) -> None:
    """Free the CPU and memory of finished notebooks (the server wants its XSRF token)."""
    page.evaluate("""async base => {
        const xsrf = (document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || '';
        const sessions = await (await fetch(base + '/api/sessions')).json();
        await Promise.all(sessions.map(s => fetch(base + '/api/sessions/' + s.id,
            {method: 'DELETE', headers: {'X-XSRFToken': decodeURIComponent(xsrf)}})));
    }""", base)
    assert json.load(urllib.request.urlopen(f"{base}/api/sessions")) == []


def _change_a_control(page, view):
    """Change the view's first dropdown (else its first slider); say what changed."""
    dropdown = view.locator(".widget-dropdown select")
    if dropdown.count():
        select = dropdown.first
        index = select.evaluate("s => s.selectedIndex")
        select.select_option(index=0 if index else 1)
        return f"dropdown -> {select.evaluate('s => s.value')}"
    readout = view.locator(".widget-slider .widget-readout").first
    low = view.locator(".widget-slider").first.evaluate(
        "s => s.querySelector('[aria-valuemin]')?.getAttribute('aria-valuemin')")
    value = readout.inner_text().strip()
    new = str(int(float(low or 0)) + 1) if value != str(int(float(low or 0)) + 1) else low
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(new)
    page.keyboard.press("Enter")
    return f"slider {value} -> {new}"


def _run_all(page, base: str, folder: Path, notebook: str) -> list[dict]:
    """Open the notebook, Run → Run All Cells from the menu, save; the saved code cells."""
    page.goto(f"{base}/lab/tree/{notebook}?reset")
    _wait_for_lab(page)
    assert _popups(page) == []
    page.click(".lm-MenuBar-item:has-text('Run')")  # the menu bar: Run → Run All Cells
    page.click(".lm-Menu-item[data-command='runmenu:run-all']")
    prompts = ("[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
               ".map(p => p.innerText)")
    # queued cells show [*]; Run All stops at a cell that raises, so wait for no [*] left
    page.wait_for_function(f"() => {prompts}.some(p => /\\*|\\d/.test(p))", polling=200)
    page.wait_for_function(
        f"() => !{prompts}.some(p => p.includes('*')) && document.querySelector("
        "'#jp-main-statusbar')?.innerText.includes('| Idle')",
        timeout=RUN_TIMEOUT_S * 1000, polling=500)
    page.keyboard.press("Control+s")
    for _ in range(60):  # the saved file: every code cell has run (or 30 s have passed)
        code = [c for c in json.loads((folder / notebook).read_text())["cells"]
                if c["cell_type"] == "code"]
        if all(c["execution_count"] for c in code):
            break
        page.wait_for_timeout(500)
    return code


def _redraw(page, view) -> str:
    """Change one of the view's controls and wait until its figure is a new image; say what
    changed."""
    before = view.locator(".widget-output img").first.get_attribute("src")
    change = _change_a_control(page, view)
    page.wait_for_function(
        "([view, before]) => { const img = view.querySelector('.widget-output img');"
        " return img && img.src !== before; }",
        arg=[view.element_handle(), before], timeout=120_000)
    return change


@pytest.mark.parametrize("notebook", [nb.name for nb in NOTEBOOKS])
def test_run_all_in_jupyterlab(lab, page, notebook):
    from playwright.sync_api import expect

    base, folder = lab
    code = _run_all(page, base, folder, notebook)
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert all(c["execution_count"] for c in code), "some code cells did not run"
    assert not errors, "\n".join(f"{e['ename']}: {e['evalue']}" for e in errors)
    assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
                        ":has-text('Traceback')").count() == 0

    # the interactive figures' widgets; training progress bars (tqdm) are widgets too, but
    # they close when done, and whether the saved file still holds them depends on timing
    widget_outputs = sum(WIDGET_MIME in o.get("data", {}) for c in code for o in c["outputs"]
                         if "interactive_figure(" in "".join(c["source"]))
    views = page.locator(".jp-OutputArea-output:has(> .jupyter-widgets)"  # a rendered view
                         ":has(.widget-dropdown, .widget-slider, .widget-checkbox)")
    expect(views).to_have_count(widget_outputs, timeout=30_000)  # rendered after the run
    for i in range(views.count()):
        view = views.nth(i)
        text = view.inner_text()
        assert "Error displaying widget" not in text and "Loading widget" not in text, text
        assert view.locator(".widget-dropdown, .widget-slider, .widget-checkbox").count()
        view.locator(".widget-output img").first.wait_for()
        print(f"{notebook}: {_redraw(page, view)} re-drew the figure")
        view.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / notebook.replace(".ipynb", ".png")))
    _shut_down_kernels(page, base)


RISE_NOTEBOOK = "01_residual_formula.ipynb"  # its widget: two sliders and a dropdown


def test_rise_slide_with_a_live_widget(tasks, page, tmp_path):
    """As an instructor presents, in JupyterLab started as `python3 tasks.py slides` starts it:
    Run All and save, open the notebook as RISE slides (jupyterlab-rise's /rise/<path>), step
    (Space) to the slide of the interactive figure and run its cell (Ctrl+Enter): the widget
    is live there (moving a control re-draws the figure). Screenshot: rise_widget_slide.png."""
    with _serve_lab(tasks, tmp_path, **tasks.slides_env()) as (base, folder):
        _run_all(page, base, folder, RISE_NOTEBOOK)
        page.set_viewport_size({"width": 1280, "height": 720})
        try:
            page.goto(f"{base}/rise/{RISE_NOTEBOOK}")
            page.wait_for_selector(".reveal .slides section", timeout=120_000)
            page.locator(".reveal").focus()
            current = ".reveal .slides section.present:not(.stack)"
            widget_cell = f"{current} .jp-CodeCell:has-text('interactive_figure(')"
            for _ in range(60):  # Space: the next slide or sub-slide, as a presenter steps
                if page.locator(widget_cell).count():
                    break
                page.keyboard.press("Space")
                page.wait_for_timeout(200)
            # the slideshow shows saved outputs; running the cell makes its widget live
            page.locator(f"{widget_cell} .jp-InputArea-editor").click()
            page.keyboard.press("Control+Enter")
            view = page.locator(f"{current} .jp-OutputArea-output:has(> .jupyter-widgets)")
            view.locator(".widget-output img").first.wait_for(timeout=120_000)
            text = view.inner_text()
            assert "Error displaying widget" not in text and "Loading widget" not in text, text
            assert view.locator(".widget-slider").count() == 2, text  # depth and scale
            image = view.locator(".widget-output img").first
            box = image.bounding_box()
            assert box and box["y"] + box["height"] <= 720, box  # the figure fits the slide
            print(f"RISE {RISE_NOTEBOOK}: {_redraw(page, view)} re-drew the figure")
            page.wait_for_timeout(500)
            SCREENSHOTS.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "rise_widget_slide.png"))
            _shut_down_kernels(page, base)
        finally:
            page.set_viewport_size({"width": 1400, "height": 1000})
