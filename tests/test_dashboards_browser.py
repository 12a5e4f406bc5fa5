"""The workbench in a real browser, as a newcomer uses it after the main job: README.md's Voila command run as written,
and JupyterLab running the dashboards and the experiment notebook. Both run in a copy of the checkout (settings.ini,
the notebooks, a small finished run at runs/toy-1_8-imas-s0), served on localhost and loaded in headless Chromium
(Debian's package, driven by Playwright). Skipped where Chromium, Voila, JupyterLab or Playwright is missing; CI
installs them. Screenshots are kept in the test's folder on failure (IMAS_LAB_SCREENSHOT=path.png keeps Voila's)."""
import json, os, shutil, socket, subprocess, sys, time
from contextlib import contextmanager
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
IMAGES = ".jp-OutputArea-output img"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def wait_listening(port: int, proc, log: Path, timeout: float = 120):
    "Wait until the server accepts connections (a GET of a Voila page would start a kernel and run the notebook)."
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the server exited before serving:\n{log.read_text()[-3000:]}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5): return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"nothing listened on port {port} in {timeout} s:\n{log.read_text()[-3000:]}")


def server_env() -> dict:
    "This environment, its Python's scripts first on PATH (voila, jupyter), one thread per process, no root override."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("IMAS_LAB_ROOT", None); env.pop("IMAS_LAB_RUN_DIR", None)
    return env


@pytest.fixture
def checkout(tmp_path, toy_root):
    "A copy of the checkout as it is after the main job, with a small finished run where the main job writes its own."
    ck = tmp_path / "checkout"
    (ck / "nbs").mkdir(parents=True)
    shutil.copy(ROOT / "settings.ini", ck)
    for nb in ("dashboards.ipynb", "train.ipynb"): shutil.copy(ROOT / "nbs" / nb, ck / "nbs")
    from imas_lab.dashboards import demo_run
    demo_run(ck / "runs" / "toy-1_8-imas-s0", toy_root, max_iters=40, batch_size=4, num_workers=0, val_batch_size=20,
             pretrained=False)
    return ck


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@contextmanager
def serve(cmd, cwd, log: Path):
    "Start a server (shell command `cmd`) in `cwd`; yields its port once it listens, stops it afterwards."
    port = free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd.format(port=port)}"], cwd=cwd, env=server_env(),
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        wait_listening(port, proc, log)
        yield port
    finally:
        proc.terminate(); proc.wait(30)


def check(page, cond: str, what: str, shot: Path, log: Path, timeout=300_000):
    "Wait for JavaScript condition `cond`; on failure keep a screenshot and say what the page and the server showed."
    try: page.wait_for_function(cond, timeout=timeout)
    except Exception as e:
        page.screenshot(path=str(shot), full_page=True)
        raise AssertionError(f"{what}: not seen (screenshot {shot}); page text:\n{page.inner_text('body')[-2000:]}\n"
                             f"server log:\n{log.read_text()[-3000:]}") from e


def test_readme_voila_command(checkout, browser, tmp_path):
    "README.md's dashboard command, exactly as written, serves the main job's run and its widgets answer."
    pytest.importorskip("voila")
    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("IMAS_LAB_RUN_DIR="))
    assert "voila nbs/dashboards.ipynb" in line and "runs/toy-1_8-imas-s0" in line, line
    log = tmp_path / "voila.log"
    with serve(f"env {line} --no-browser --port={{port}} --Voila.ip=127.0.0.1", checkout, log) as port:
        page = browser.new_page(viewport={"width": 1400, "height": 3400})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000, wait_until="commit")  # Voila streams the outputs
        shot = Path(os.environ.get("IMAS_LAB_SCREENSHOT", tmp_path / "voila.png"))
        check(page, "document.body && document.body.innerText.includes('Augmentation explorer') && "
                    f"document.querySelectorAll('{IMAGES}').length >= 5", "the three dashboards", shot.with_suffix(".fail.png"), log)
        body = page.inner_text("body")
        for title in ("Hardness", "Augmentation explorer", "Pseudo-labels", "kept", "re-roll"): assert title in body
        assert str(checkout / "runs" / "toy-1_8-imas-s0") in body, body[:2000]  # the run the README names, found from nbs/
        assert page.locator(".widget-slider").count() >= 4 and "Loading widget" not in body
        caption = page.locator("text=strong ops:").inner_text()
        page.get_by_role("button", name="re-roll").click()                # the kernel behind the page answers
        check(page, f"document.body && !document.body.innerText.includes({caption!r})", "a re-rolled view", shot.with_suffix(".fail.png"), log, 60_000)
        page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000


STARTED = "Array.from(document.querySelectorAll('.jp-InputPrompt')).some(e => /\\[(\\*|\\d+)\\]/.test(e.innerText))"


def run_all(page, shot: Path, log: Path):
    "JupyterLab's Run > Run All Cells, once the kernel is idle; again if no cell started (a click the page missed)."
    check(page, "(document.querySelector('#jp-main-statusbar') || document.body).innerText.includes('Idle')",
          "an idle kernel", shot.with_suffix(".kernel.png"), log, 180_000)
    for attempt in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try: return page.wait_for_function(STARTED, timeout=30_000)
        except Exception:
            if attempt == 2: check(page, STARTED, "a cell running after Run All", shot, log, 1)


def test_jupyterlab_run_all(checkout, browser, tmp_path, toy_root):
    "In JupyterLab: the dashboards run all and a slider redraws a figure; the experiment notebook writes its run dir."
    pytest.importorskip("jupyterlab")
    import yaml
    from conftest import TINY
    nb = json.loads((checkout / "nbs" / "train.ipynb").read_text())  # the parameters as a user would edit them
    at = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    mine = dict(data_root=str(toy_root), split="1/4", max_iters=4, eval_every=2, device="cpu", config=str(tmp_path / "tiny.yaml"))
    nb["cells"].insert(at + 1, dict(cell_type="code", id="myparams", metadata={}, outputs=[], execution_count=None,
                                    source="".join(f"{k} = {v!r}\n" for k, v in mine.items())))
    (checkout / "nbs" / "train.ipynb").write_text(json.dumps(nb))
    log = tmp_path / "lab.log"
    cmd = ("jupyter lab --no-browser --allow-root --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token= "
           "--ServerApp.password= --LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
    with serve(cmd, checkout, log) as port:
        page = browser.new_page(viewport={"width": 1400, "height": 3000})
        page.goto(f"http://127.0.0.1:{port}/lab/tree/nbs/dashboards.ipynb", timeout=120_000)
        check(page, "document.querySelector('.jp-Notebook .jp-Cell') !== null", "the notebook", tmp_path / "lab-open.png", log, 120_000)
        run_all(page, tmp_path / "lab-run.png", log)
        check(page, f"document.querySelectorAll('.widget-slider').length >= 4 && document.querySelectorAll('{IMAGES}').length >= 5",
              "the dashboards' widgets", tmp_path / "lab-widgets.png", log)
        assert str(checkout / "runs" / "toy-1_8-imas-s0") in page.inner_text("body")  # runs/... resolved from nbs/
        before = page.eval_on_selector_all(IMAGES, "els => els.map(e => e.src)")
        handle = page.locator(".widget-slider .noUi-handle").first
        handle.focus(); handle.press("Home")                                # the first evaluation window
        check(page, f"JSON.stringify(Array.from(document.querySelectorAll('{IMAGES}')).map(e => e.src)) !== "
                    f"{json.dumps(json.dumps(before))}", "a figure redrawn after the slider moved", tmp_path / "lab-slider.png", log, 120_000)
        page.goto(f"http://127.0.0.1:{port}/lab/tree/nbs/train.ipynb", timeout=120_000)
        check(page, "document.body.innerText.includes('Experiment')", "the experiment notebook", tmp_path / "lab-train.png", log, 120_000)
        run_all(page, tmp_path / "lab-train-run.png", log)
        summary = checkout / "runs" / "toy-1_4-imas-s0" / "summary.json"   # README: runs/<dataset>-<split>-<method>-s<seed>
        deadline = time.time() + 300
        while not summary.exists() and time.time() < deadline: time.sleep(1)
        if not summary.exists(): page.screenshot(path=str(tmp_path / "lab-train-run.png"), full_page=True)
        assert summary.exists(), f"no {summary}; server log:\n{log.read_text()[-3000:]}"
        assert json.loads(summary.read_text())["iters"] == 4 and not (checkout / "nbs" / "runs").exists()

