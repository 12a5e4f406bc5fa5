"""Real photographs: SegNet's CamVid from the command line with the ImageNet EfficientNet-Lite0 encoder, predict's
overlays in CamVid's colours and the dashboards on a CamVid run (these skip without the CamVid folder: see
conftest.camvid and conftest.camvid_run); and every method on a timm CNN encoder, on a tiny CamVid tree written on the fly."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

def test_camvid_from_the_command_line(camvid_run):
    "The camvid preset's run: 367 train images split 1/8, val evaluated whole, the run card says what was evaluated."
    card = json.loads((camvid_run / "run_card.json").read_text())
    assert (card["dataset"], card["eval_part"], card["eval_protocol"]) == ("camvid", "val", "whole")
    assert card["n_labeled"] + card["n_unlabeled"] == 367 and card["n_labeled"] == round(367 / 8)
    row = pd.read_csv(camvid_run / "metrics.csv").iloc[-1]
    assert row["iter"] == 2 and 0 < row["miou_teacher"] < 100
    summary = json.loads((camvid_run / "summary.json").read_text())
    assert len(summary["per_class_iou"]) == 11, summary.keys()
    config = (camvid_run / "config.yaml").read_text()
    assert "timm/efficientnet_lite0" in config and "pretrained: imagenet" in config


def test_predict_overlay_in_camvid_colours(camvid_run, camvid, tmp_path):
    "`python -m imas_lab.predict ... --overlay` on CamVid photographs: SegNet's palette in the label maps and overlays."
    from imas_lab.data import CAMVID_PALETTE
    images = tmp_path / "images"; images.mkdir()
    for name in sorted(os.listdir(camvid / "val"))[:2]: shutil.copy(camvid / "val" / name, images)
    r = subprocess.run([sys.executable, "-m", "imas_lab.predict", str(camvid_run / "checkpoints" / "best.pt"),
                        str(images), str(tmp_path / "out"), "--device", "cpu", "--overlay"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    labels = sorted((tmp_path / "out").glob("*[!y].png"))
    assert len(labels) == 2 and len(list((tmp_path / "out").glob("*_overlay.jpg"))) == 2
    png = Image.open(labels[0])
    assert png.size == (480, 360) and np.asarray(png).max() < 11
    palette = np.array(png.getpalette()[:33]).reshape(11, 3)
    assert (palette == CAMVID_PALETTE).all(), palette


def test_dashboards_on_a_camvid_run(camvid_run):
    "The three dashboards read a CamVid run: hardness table and figures, the augmentation explorer, pseudo-labels."
    import matplotlib; matplotlib.use("Agg")
    from imas_lab.dashboards import HardnessDashboard
    from imas_lab.explorers import AugmentExplorer, PseudoLabelViewer
    hd = HardnessDashboard(camvid_run)
    worst = hd.instances(hardest=True)
    assert len(worst) > 0 and worst["gamma"].between(0, 1).all()
    assert hd.plot_instance(worst.index[0]) is not None
    ex = AugmentExplorer(hd.rd.data, batch=4)
    v = ex.views(0, 0.5)
    assert v["weak"].shape == (3, 160, 160) and v["id"] == hd.rd.data.train[0].id  # the camvid preset's crop
    pl = PseudoLabelViewer(camvid_run, hd.rd.data, n_sample=4)
    assert 0 <= pl.stats(0.5)["kept"] <= 1


@pytest.mark.parametrize("method", ["supervised", "fixmatch", "imas", "unimatch", "unimatch_v2"])
def test_every_method_on_a_timm_encoder(tmp_path, method):
    "One training step of each method (feature perturbation and complementary dropout included) on timm's Lite0."
    from imas_lab.testing import camvid_tree
    from imas_lab.train import train
    data = camvid_tree(tmp_path / "cv", train=tuple(f"0001TP_{i}" for i in range(8)), size=(24, 32))
    summary = train("camvid", str(data), split="1/2", method=method, max_iters=1, eval_every=1, run_dir=str(tmp_path / "run"),
                    device="cpu", crop_size=32, base_size=32, scale_range=(1.0, 1.0), batch_size=2, tau=0.0,
                    pretrained=False, cache_images=False)
    assert summary["iters"] == 1 and len(summary["per_class_iou"]) == 11
