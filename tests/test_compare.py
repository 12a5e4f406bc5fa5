"A sweep end to end: the experiment notebook through papermill per method, a table, then a rerun that skips."
import json, subprocess, sys
from pathlib import Path
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_runs_skips_and_tabulates(tmp_path, toy_root, monkeypatch):
    from imas_lab.compare import sweep
    cfg = tmp_path / "small.yaml"; cfg.write_text(yaml.safe_dump(dict(crop_size=32, base_size=32, batch_size=4,
                                                                       num_workers=0, val_batch_size=20,
                                                                       pretrained=False)))
    monkeypatch.chdir(ROOT)
    kw = dict(runs_root=tmp_path / "runs", data_root=str(toy_root), max_iters=3, eval_every=3, device="cpu",
              config=str(cfg))
    table = sweep(["1/4"], ["supervised", "imas"], [5], **kw)
    assert table[["method", "seed", "iters"]].values.tolist() == [["imas", 5, 3], ["supervised", 5, 3]]
    runs = [Path(p) for p in table["path"]]
    assert [p.name for p in runs] == ["toy-1_4-imas-s5", "toy-1_4-supervised-s5"]
    for run in runs:
        executed = json.loads((run / "train.ipynb").read_text())      # the executed notebook is kept in the run dir
        assert any("per_class_iou" in "".join(o.get("text", "")) or "data" in o
                   for c in executed["cells"] for o in c.get("outputs", []))
        assert yaml.safe_load((run / "config.yaml").read_text())["backbone"] == "unet"   # the toy preset's model
    stamps = [(p / "summary.json").stat().st_mtime_ns for p in runs]
    again = sweep(["1/4"], ["supervised", "imas"], [5], **kw)           # finished runs are skipped
    assert [(p / "summary.json").stat().st_mtime_ns for p in runs] == stamps
    pd.testing.assert_frame_equal(again, table)


def test_table_command(tmp_path):
    p = subprocess.run([sys.executable, "-m", "imas_lab.compare", "table", str(tmp_path / "none-*")],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode != 0 and "none-*" in p.stderr
