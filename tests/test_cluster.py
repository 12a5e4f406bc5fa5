"""What clusters and laptops do to runs, with real processes and signals: preemption and requeue, a second process on
the same run dir, failing checkpoint writes, an unreadable last checkpoint, a killed toy-data draw, a dead rank."""
import errno, json, os, signal, subprocess, sys, time, warnings
from pathlib import Path
import pandas as pd
import pytest
import torch

from conftest import TINY
from test_train import ROOT, cli, tiny_args, teacher_of

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def start(*args, env=ENV):
    "A training process in the background, its stderr kept in a pipe."
    return subprocess.Popen([sys.executable, "-m", "imas_lab.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(cond, proc=None, timeout=300):
    deadline = time.time() + timeout
    while not cond():
        assert proc is None or proc.poll() is None, f"the process ended first: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def files(run):
    "Every file under the run dir but the lock, with its bytes."
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(Path(run).rglob("*")) if p.is_file() and p.name != ".lock"}


def preemptible_args(toy_root, run):
    return [*tiny_args(toy_root, run, method="imas"), "--max_iters", "60", "--eval_every", "20", "--checkpoint_every", "20",
            "--resume", "auto"]


@pytest.fixture(scope="module")
def uninterrupted(toy_root, tmp_path_factory):
    "The run the preempted ones must equal, made once: `--resume auto` in an empty run dir is a fresh start."
    full = tmp_path_factory.mktemp("preempt") / "full"
    done = cli(*preemptible_args(toy_root, full))
    assert done.returncode == 0, done.stderr[-3000:]
    return full


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_preempted_run_requeues_exactly(tmp_path, toy_root, uninterrupted, sig):
    "A signal ends the run after its step with a checkpoint of that step and exit 75; `--resume auto` continues it exactly."
    run_args = lambda name: preemptible_args(toy_root, tmp_path / name)
    proc = start(*run_args("cut"))
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    wait_for(last.exists, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    ck = torch.load(last, weights_only=True)
    assert 20 <= ck["iter"] < 60, ck["iter"]
    lines = [l for l in err.replace("\r", "\n").splitlines() if "preempted" in l]
    assert lines == [f"imas_lab: preempted by {signal.Signals(sig).name} after iteration {ck['iter']}; wrote {last}. "
                     f"Continue with --resume auto"], err[-3000:]
    assert not (tmp_path / "cut" / "summary.json").exists()
    requeued = cli(*run_args("cut"))  # what a requeue script runs: the same line
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    a, b = teacher_of(uninterrupted), teacher_of(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda p: pd.read_csv(p).drop(columns="seconds")
    pd.testing.assert_frame_equal(drop(uninterrupted / "metrics.csv"), drop(tmp_path / "cut" / "metrics.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(uninterrupted / "hardness.csv"), pd.read_csv(tmp_path / "cut" / "hardness.csv"))
    again = cli(*run_args("cut"))  # a requeue after the end changes nothing that was written
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["final_miou"] == \
           json.loads((uninterrupted / "summary.json").read_text())["final_miou"]


def test_one_writer_per_run_dir(tmp_path, toy_root):
    "A second process on a live run's dir is refused naming the holder; the lock of a killed run is taken over."
    run = tmp_path / "run"
    args = [*tiny_args(toy_root, run), "--max_iters", "400", "--eval_every", "200", "--checkpoint_every", "20"]
    proc = start(*args)
    last, lock = run / "checkpoints" / "last.pt", run / ".lock"
    wait_for(last.exists, proc)
    t0 = time.time()
    second = cli(*args, "--resume", "auto")
    assert second.returncode != 0 and "is in use by another run" in second.stderr, second.stderr[-3000:]
    assert f"pid {proc.pid} on {os.uname().nodename}" in second.stderr, second.stderr[-3000:]
    assert time.time() - t0 < 120 and proc.poll() is None
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert f"pid {proc.pid}" in lock.read_text()  # a killed process leaves its name, not its lock
    resumed = cli(*args, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "taking over the lock" in resumed.stderr and f"pid {proc.pid}" in resumed.stderr, resumed.stderr[-3000:]
    assert lock.read_text() == "" and json.loads((run / "summary.json").read_text())["iters"] == 400


def tiny_run(toy_root, run, **kw):
    from imas_lab.config import resolve_config
    from imas_lab.train import Run
    cfg = resolve_config("toy", data_root=str(toy_root), split="16", run_dir=str(run), device="cpu", max_iters=12,
                         eval_every=4, **{**TINY, "method": "fixmatch", **kw})
    return Run(cfg)


def test_failed_checkpoint_write_and_unreadable_last(tmp_path, toy_root, monkeypatch):
    "A failing write stops the run naming file and cause with every checkpoint intact; an unreadable last.pt is skipped."
    from imas_lab.checkpoint import CheckpointWriteError
    full = tiny_run(toy_root, tmp_path / "full"); full.fit()
    run = tmp_path / "run"
    t = tiny_run(toy_root, run); t.fit(until=8)
    written = files(run)
    real_save = torch.save
    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # the temporary file is written, then the disk turns out full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match="No space left on device") as e: t.fit()
    assert str(run / "checkpoints") in str(e.value)
    assert files(run).keys() >= {"checkpoints/last.pt", "checkpoints/last.prev.pt", "checkpoints/best.pt"}
    assert all(files(run)[k] == v for k, v in written.items() if k.startswith("checkpoints/")), "a checkpoint changed"
    assert not [p for p in (run / "checkpoints").iterdir() if ".tmp" in p.name]
    monkeypatch.setattr(torch, "save", real_save)
    (run / "checkpoints" / "last.pt").write_bytes(written["checkpoints/last.pt"][:1000])  # a copy cut short
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = tiny_run(toy_root, run, resume="auto")
    assert resumed.it == 4 and any("cannot read checkpoint" in str(w.message) for w in caught), caught
    assert (run / "checkpoints" / "last.unreadable.pt").exists()
    resumed.fit()
    a, b = full.step.teacher.state_dict(), resumed.step.teacher.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["final_miou"] == full.summary["final_miou"]


def test_killed_toy_draw_is_never_trusted(tmp_path):
    "A process killed while drawing the embedded data leaves no dataset; the next draw is complete and removes the remains."
    root = tmp_path / "toy"
    code = f"from imas_lab.toydata import make_toy_dataset; make_toy_dataset({str(root)!r}, n_train=20000, n_val=10)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV)
    tmp = tmp_path / f".toy.tmp-{proc.pid}"
    wait_for(lambda: len(list((tmp / "JPEGImages").glob("*.jpg"))) > 20 if tmp.exists() else False, timeout=120)
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert not root.exists() and tmp.exists()
    from imas_lab.toydata import make_toy_dataset, TOY_CLASSES
    from imas_lab.data import build_dataset
    make_toy_dataset(root, n_train=12, n_val=4)
    data = build_dataset("toy", root)
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 16 and data.num_classes == len(TOY_CLASSES)
    assert not tmp.exists()


def test_concurrent_draws_end_with_one_dataset(tmp_path):
    "Processes that start at once on a toy dataset drawn with other parameters (a sweep's lanes) all end with the new one."
    from imas_lab.toydata import make_toy_dataset, _read_meta
    root = tmp_path / "toy"
    make_toy_dataset(root, n_train=8, n_val=2)
    code = f"from imas_lab.toydata import make_toy_dataset; make_toy_dataset({str(root)!r}, n_train=60, n_val=4)"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=ENV, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    assert _read_meta(root)["n_train"] == 60 and len(list((root / "JPEGImages").glob("*.jpg"))) == 64
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_dead_rank_ends_the_run_resumably(tmp_path, toy_root):
    "Under torchrun, a rank killed mid-run ends the others within bounded time; the run dir then resumes to the end."
    psutil = pytest.importorskip("psutil")
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "imas_lab.train",
           *tiny_args(toy_root, run), "--max_iters", "100", "--eval_every", "50", "--checkpoint_every", "10",
           "--resume", "auto"]
    env = {**ENV, "IMAS_LAB_DIST_TIMEOUT": "30"}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wait_for((run / "checkpoints" / "last.pt").exists, proc)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.environ().get("LOCAL_RANK") == "1"]
    assert len(workers) == 1, workers
    t0 = time.time()
    workers[0].send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0 and time.time() - t0 < 120, err[-3000:]
    from imas_lab.checkpoint import read_checkpoint
    assert read_checkpoint(run / "checkpoints" / "last.pt")[0]["iter"] < 100
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["iters"] == 100
