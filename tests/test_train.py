"""Training end to end, outside the notebooks: papermill, the command line, a killed and resumed process, torchrun
with two CPU processes, and refused checkpoints."""
import json, re, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
from conftest import TINY


def cli(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "imas_lab.train", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, **kw)


def tiny_args(toy_root, run_dir, **extra):
    settings = {**TINY, **extra}
    return ["--data_root", str(toy_root), "--split", "16", "--run_dir", str(run_dir), "--device", "cpu",
            *[a for k, v in settings.items() for a in ("--set", f"{k}={v}")]]


def teacher_of(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["teacher"]


def test_papermill_notebook(tmp_path, toy_root):
    "The experiment notebook runs headless with papermill parameters and a YAML file of further settings."
    pm = pytest.importorskip("papermill")
    cfg = tmp_path / "tiny.yaml"; cfg.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(out), cwd=str(ROOT), kernel_name="python3",
                        parameters=dict(data_root=str(toy_root), split="1/4", method="imas", max_iters=4, eval_every=2,
                                        device="cpu", seed=1, run_dir=str(tmp_path / "run"), config=str(cfg)))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["iters"], summary["method"], summary["seed"], summary["split"]) == (4, "imas", 1, "1/4")
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["iter"].tolist() == [2, 4]
    for name in ("curves.png", "hardness.png", "config.yaml", "checkpoints/best.pt"): assert (tmp_path / "run" / name).exists()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["inner_channels"] == 16
    assert "per_class_iou" in out.read_text()


def test_notebook_parameters_are_the_run_parameters():
    "The notebook's `parameters` cell names exactly the parameters of `run_config`, in its order."
    import ast, nbformat
    from imas_lab.train import RUN_PARAMS
    nb = nbformat.read(ROOT / "nbs" / "train.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{len(cells)} cells tagged parameters"
    names = tuple(t.id for node in ast.parse(cells[0].source).body for t in node.targets)
    assert names == RUN_PARAMS, (names, RUN_PARAMS)


# UniMatch V2's targets come from the EMA teacher, a copy of the random init in the first steps: threshold 0
@pytest.mark.parametrize("method, reported, extra", [("unimatch", "student", {}),
                                                    ("unimatch_v2", "teacher", dict(tau=0.0, lock_backbone=True))])
def test_unimatch_from_cli_and_notebook(tmp_path, toy_root, method, reported, extra):
    "UniMatch (no teacher: reports its student) and UniMatch V2 (its EMA teacher; from the CLI with a locked encoder) run."
    p = cli(*tiny_args(toy_root, tmp_path / "cli", **extra), "--method", method, "--split", "1/8", "--max_iters", "2",
            "--eval_every", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    pm = pytest.importorskip("papermill")
    cfg = tmp_path / "tiny.yaml"; cfg.write_text(yaml.safe_dump(TINY))
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(ROOT),
                        kernel_name="python3", parameters=dict(data_root=str(toy_root), method=method, max_iters=2,
                                                               eval_every=2, device="cpu", run_dir=str(tmp_path / "nb"),
                                                               config=str(cfg)))
    for run in ("cli", "nb"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        assert (summary["method"], summary["reported"], summary["iters"]) == (method, reported, 2), summary
    metrics = pd.read_csv(tmp_path / "cli" / "metrics.csv")
    assert metrics["loss_u"].gt(0).all(), metrics             # the strong (and perturbed) views were trained
    if extra.get("lock_backbone"):  # no encoder weight in the optimizer; student and teacher encoders still alike
        ck = torch.load(tmp_path / "cli" / "checkpoints" / "last.pt", weights_only=True)
        assert ck["optimizer"]["param_groups"][0]["params"] == [], ck["optimizer"]["param_groups"][0]
        enc = [k for k in ck["student"] if k.startswith("backbone.")]
        assert enc and all(torch.equal(ck["student"][k], ck["teacher"][k]) for k in enc)
    own = ["loss_s1", "loss_s2"] + (["loss_fp"] if method == "unimatch" else [])
    assert metrics[own].notna().all().all(), metrics  # its own terms, logged as they come


def test_dinov2_from_cli(tmp_path, toy_root):
    "A DINOv2 encoder (small, random init: no weights offline) trains iMAS on the embedded data from the command line."
    p = cli(*tiny_args(toy_root, tmp_path / "vit", backbone="dinov2_s"), "--method", "imas", "--crop_size", "28",
            "--max_iters", "2", "--eval_every", "2", "--set", "base_size=28", "--set", "optimizer=adamw",
            "--set", "layer_decay=0.9", "--lr", "1e-4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "random init" in p.stderr                           # said, not silent
    ck = torch.load(tmp_path / "vit" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["config"]["backbone"] == "dinov2_s" and "backbone.blocks.11.mlp.fc2.weight" in ck["student"]
    assert len(ck["optimizer"]["param_groups"]) == 12 + 2 + 1  # embeddings, 12 blocks, final norm; the head


def test_killed_run_resumes_exactly(tmp_path, toy_root):
    "A process killed after a checkpoint and resumed ends with the weights and logs of an uninterrupted run."
    common = dict(method="fixmatch")
    full = cli(*tiny_args(toy_root, tmp_path / "full", **common), "--max_iters", "24", "--eval_every", "8",
               "--checkpoint_every", "4")
    assert full.returncode == 0, full.stderr
    args = [*tiny_args(toy_root, tmp_path / "cut", **common), "--max_iters", "24", "--eval_every", "8", "--checkpoint_every", "4"]
    proc = subprocess.Popen([sys.executable, "-m", "imas_lab.train", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline: time.sleep(0.05)
    proc.send_signal(signal.SIGKILL); proc.wait()
    cut_at = torch.load(last, weights_only=True)["iter"]
    assert cut_at < 24, "the run finished before it could be killed"
    rerun = cli(*args)
    assert rerun.returncode != 0 and "resume=True" in rerun.stderr  # a fresh start refuses the killed run's dir
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = teacher_of(tmp_path / "full"), teacher_of(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = lambda p: pd.read_csv(p).drop(columns="seconds")
    pd.testing.assert_frame_equal(drop(tmp_path / "full" / "metrics.csv"), drop(tmp_path / "cut" / "metrics.csv"))
    from imas_lab.records import read_events  # TensorBoard: each step once, as in the uninterrupted run
    pd.testing.assert_frame_equal(read_events(tmp_path / "full"), read_events(tmp_path / "cut"))
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["final_miou"] == \
           json.loads((tmp_path / "full" / "summary.json").read_text())["final_miou"]


def test_torchrun_two_cpu_processes(tmp_path, toy_root):
    "torchrun with 2 CPU processes (gloo): one run dir, world_size 2, hardness of both processes' instances."
    run = tmp_path / "ddp"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "imas_lab.train", *tiny_args(toy_root, run), "--max_iters", "4", "--eval_every", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["world_size"], summary["iters"]) == (2, 4)
    h = pd.read_csv(run / "hardness.csv")
    assert len(h) == 4 * TINY["batch_size"] * 2            # every step, both processes' instances
    per_iter = h.groupby("iter")["idx"].nunique()
    assert (per_iter == 2 * TINY["batch_size"]).all()       # the processes saw different instances
    assert len(re.findall(r"^best_miou:", p.stdout, re.M)) == 1   # rank 0 alone reports its summary


def test_refuses_other_settings_and_bad_files(tmp_path, toy_root):
    "Resuming with other settings or from an unreadable checkpoint fails with a message; nothing written is lost."
    run = tmp_path / "run"
    assert cli(*tiny_args(toy_root, run), "--max_iters", "2", "--eval_every", "2").returncode == 0
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    other = cli(*tiny_args(toy_root, run, tau=0.7), "--max_iters", "2", "--eval_every", "2", "--resume")
    assert other.returncode != 0 and "tau: checkpoint 0.5, this run 0.7" in other.stderr
    (run / "checkpoints" / "last.pt").rename(tmp_path / "saved.pt")
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    bad = cli(*tiny_args(toy_root, run), "--max_iters", "2", "--eval_every", "2", "--resume")
    assert bad.returncode != 0 and "cannot read checkpoint" in bad.stderr and "last.pt" in bad.stderr
    (tmp_path / "saved.pt").rename(run / "checkpoints" / "last.pt")
    after = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_checkpoint_with_other_class_count(tmp_path, toy_root):
    "A checkpoint of a model with another number of classes is refused, naming both counts."
    from imas_lab.config import resolve_config
    from imas_lab.train import Run
    run = tmp_path / "run"
    assert cli(*tiny_args(toy_root, run), "--max_iters", "2", "--eval_every", "2").returncode == 0
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True); ck["num_classes"] = 21
    torch.save(ck, run / "checkpoints" / "last.pt")
    cfg = resolve_config("toy", data_root=str(toy_root), split="16", run_dir=str(run), device="cpu", max_iters=2,
                         eval_every=2, resume=True, **TINY)
    from imas_lab.toydata import TOY_CLASSES
    with pytest.raises(ValueError, match=f"num_classes: checkpoint 21, this run {len(TOY_CLASSES)}"): Run(cfg)


def test_cli_rejects_unknown_values(tmp_path):
    p = cli("--method", "meanteacher", "--run_dir", str(tmp_path / "r"))
    assert p.returncode != 0 and "meanteacher" in p.stderr
    p = cli("--set", "learning_rate=0.1", "--run_dir", str(tmp_path / "r"))
    assert p.returncode != 0 and "learning_rate" in p.stderr
