"Shared by the end-to-end tests: a small model and run, and a small copy of the embedded data."
import os
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
