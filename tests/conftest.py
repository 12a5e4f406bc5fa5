"Shared by the end-to-end tests: a small model and run, a small copy of the embedded data, a small CamVid run."
import os, subprocess, sys
from pathlib import Path
import pytest

# A small DeepLabv3+ (the toy preset's UNet is covered by the notebooks' tests and the sweep test).
TINY = dict(backbone="mobilenet_v3_small", output_stride=16, inner_channels=16, low_channels=8, crop_size=32,
            base_size=32, batch_size=4, num_workers=0, val_batch_size=50, tau=0.5, pretrained=False)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    "The embedded dataset drawn small into a temporary folder: 64 train and 20 val images of 32 px."
    from imas_lab.toydata import make_toy_dataset
    return make_toy_dataset(tmp_path_factory.mktemp("data") / "toy", n_train=64, n_val=20, size=32)


def camvid_root():
    "The real CamVid folder: $IMAS_LAB_CAMVID, else the copy beside this checkout (the maintainers'), else None."
    given = os.environ.get("IMAS_LAB_CAMVID")
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
    path = Path(given) if given else beside
    return path if (path / "train.txt").exists() else None


@pytest.fixture(scope="session")
def camvid():
    "The real CamVid folder; tests that need it skip where it is absent (a user's clone has none)."
    root = camvid_root()
    if root is None: pytest.skip("no CamVid folder (set IMAS_LAB_CAMVID to SegNet's CamVid folder to run this)")
    return root


# Small enough for CI: two steps, crops of 64, evaluation on the 101 whole 360x480 val images.
CAMVID_SMALL = dict(crop_size=64, batch_size=2, max_iters=2, eval_every=2, cache_images=False)


@pytest.fixture(scope="session")
def camvid_run(camvid, tmp_path_factory):
    "A two-step iMAS run on CamVid at 1/8 labels from the packaged ImageNet EfficientNet-Lite0, as the README says."
    run = tmp_path_factory.mktemp("camvid") / "run"
    args = ["--dataset", "camvid", "--data_root", str(camvid), "--split", "1/8", "--run_dir", str(run), "--device", "cpu",
            *[a for k, v in CAMVID_SMALL.items() for a in ("--set", f"{k}={v}")]]
    r = subprocess.run([sys.executable, "-m", "imas_lab.train", *args], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    return run
