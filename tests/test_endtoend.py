"""The end-to-end script (`python -m imas_lab.endtoend`, nbs/14b_endtoend.ipynb) at its --tiny size on the CPU: every
stage runs, the table's figures are real, and the whole script stays within what CI can spend on it."""
import json, os, subprocess, sys, time
from pathlib import Path

import torch

from imas_lab.endtoend import (TINY, VOC_EAGER, STEP_EAGER, EVAL_VOC, EVAL_CITY, CHECKPOINT, RESUME, VOC_COMPILE,
                               CAMVID_RUN, STEP_COMPILE, STAGES)

ROOT = Path(__file__).resolve().parents[1]
TINY_LIMIT_S = 120  # the bound for the CPU run


def test_tiny_end_to_end(tmp_path):
    "Every stage at --tiny: positive rates, a checkpoint timed, a stopped run resumed to its end, within 2 minutes."
    out = tmp_path / "out"
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "imas_lab.endtoend", "--tiny", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the other tests' processes: one thread each on a shared CPU
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    wall = time.perf_counter() - start
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads((out / "endtoend.json").read_text())
    rows, runs = {r["stage"]: r for r in doc["rows"]}, doc["runs"]
    assert list(rows) == [name for name, _ in STAGES.values()]
    statuses = {k: r["status"] for k, r in rows.items()}
    assert all(s == "ok" for k, s in statuses.items() if k != CAMVID_RUN), statuses
    assert rows[CAMVID_RUN]["status"].startswith("skipped: no --camvid"), rows[CAMVID_RUN]
    assert all(r["device"] == doc["env"]["device"] and r["torch"] == torch.__version__ for r in rows.values())

    for name in (VOC_EAGER, VOC_COMPILE):  # two evaluations, each run complete, its rates real
        r, files = rows[name], runs[name]
        assert r["iters"] == TINY.iters and [m["iter"] for m in files["metrics"]] == [TINY.eval_every, TINY.iters]
        assert r["pairs_per_s_all_in"] > 0 and r["pairs_per_s_loader_step"] >= r["pairs_per_s_all_in"], r
        assert r["peak_gib"] > 0 and r["voc_1_16_hours"] > 0, r
        assert files["config"]["compile"] is (name == VOC_COMPILE)
    assert rows[VOC_COMPILE]["compile_s"] > 0
    assert rows[VOC_COMPILE]["recompiles"] == len(runs[VOC_COMPILE]["recompile_reasons"])
    assert rows[STEP_EAGER]["pairs_per_s_step"] > 0 and rows[STEP_COMPILE]["pairs_per_s_step"] > 0
    assert rows[EVAL_VOC]["eval_images_per_s"] > 0 and runs[EVAL_VOC]["images"] == TINY.n_val
    assert rows[EVAL_CITY]["eval_images_per_s"] > 0 and runs[EVAL_CITY]["images"] == TINY.city_images

    ckpt = Path(runs[CHECKPOINT]["checkpoint"])  # the eager run's checkpoint, written and timed
    assert rows[CHECKPOINT]["s_per_checkpoint"] > 0 and ckpt.exists()
    assert torch.load(ckpt, weights_only=True)["iter"] == TINY.iters

    resume = runs[RESUME]  # stopped by SIGTERM before its end with exit 75, then complete
    assert (resume["first_exit"], resume["second_exit"]) == (75, 0) and resume["stopped_at"] < TINY.resume_iters
    summary = json.loads((Path(resume["run_dir"]) / "summary.json").read_text())
    assert summary["iters"] == rows[RESUME]["iters"] == TINY.resume_iters

    md = (out / "endtoend.md").read_text()
    assert all(f"| {name} | " in md for name in rows) and "| pairs/s all-in |" in md
    assert len(list((out / "work" / "voc_jpegs" / "JPEGImages").glob("*.jpg"))) == TINY.n_train + TINY.n_val
    print(f"--tiny took {wall:.1f} s")
    assert wall < TINY_LIMIT_S, f"--tiny took {wall:.0f} s"
