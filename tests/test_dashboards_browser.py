"""The dashboards in a real browser: nbs/dashboards.ipynb served by Voila on localhost, loaded in headless Chromium
(Debian's package, driven by Playwright), its widgets rendered and live. Skipped where Chromium, Voila or Playwright
is missing; CI installs all three. Set IMAS_LAB_SCREENSHOT=path.png to keep the screenshot."""
import os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def wait_listening(port: int, proc, timeout: float = 120):
    "Wait until the server accepts connections (a GET of the page would start a kernel and run the notebook)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "voila exited before serving"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5): return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"voila did not listen on port {port} in {timeout} s")


@pytest.fixture
def voila(tmp_path, toy_root):
    pytest.importorskip("voila")
    from imas_lab.dashboards import demo_run
    run = demo_run(tmp_path / "run", toy_root, max_iters=40, batch_size=4, num_workers=0, val_batch_size=20,
                   pretrained=False)
    port = free_port()
    env = {**os.environ, "IMAS_LAB_RUN_DIR": str(run), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(ROOT / "nbs" / "dashboards.ipynb"), "--no-browser",
                             f"--port={port}", "--Voila.ip=127.0.0.1"], cwd=ROOT / "nbs", env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "voila.log", "w"))
    try:
        wait_listening(port, proc)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate(); proc.wait(30)


def test_dashboards_render_in_chromium(voila, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shot = Path(os.environ.get("IMAS_LAB_SCREENSHOT", tmp_path / "dashboards.png"))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS[1:],
                                     headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 3400})
        page.goto(voila, timeout=120_000, wait_until="commit")  # Voila streams the cells' outputs as they run
        try: page.wait_for_selector("text=Augmentation explorer", timeout=300_000)   # the last widgets have rendered
        except sync_api.TimeoutError as e:
            page.screenshot(path=str(shot.with_suffix(".timeout.png")), full_page=True)
            log = (tmp_path / "voila.log").read_text()[-3000:]
            raise AssertionError(f"widgets not rendered; page text:\n{page.inner_text('body')[-2000:]}\n"
                                 f"voila log:\n{log}") from e
        page.wait_for_function("document.querySelectorAll('.jp-OutputArea-output img').length >= 5", timeout=60_000)
        body = page.inner_text("body")
        for title in ("Hardness", "Augmentation explorer", "Pseudo-labels", "kept", "re-roll"): assert title in body
        assert page.locator(".widget-slider").count() >= 4 and "Loading widget" not in body
        caption = page.locator("text=strong ops:").inner_text()
        page.get_by_role("button", name="re-roll").click()                # the kernel behind the page answers
        page.wait_for_function(f"!document.body.innerText.includes({caption!r})", timeout=60_000)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 50_000
