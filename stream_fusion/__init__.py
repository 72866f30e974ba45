"""stream_fusion: real-time infrared + visible video fusion (see README.md)."""
import os
from pathlib import Path

__version__ = "0.1.0"

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
WEIGHTS_DIR = PACKAGE_DIR / "weights"
DEMO_IR = ASSETS_DIR / "nato_camp" / "ir"
DEMO_VIS = ASSETS_DIR / "nato_camp" / "vis"
DEMO_FPS = 6.0  # the Nato_camp frames are ~0.1-0.3 s apart (see its ATTRIBUTION.md)
# The registered pairs for training and evaluation (train/, eval/, sequences/), in neither the repository nor the
# package: a checkout finds them beside itself, as ../shared/data; the STREAM_FUSION_DATA variable names another folder.
DATA_DIR = Path(os.environ.get("STREAM_FUSION_DATA") or PACKAGE_DIR.parent.parent / "shared" / "data")
# The demo clip's IR sits ~4 px off its visible frames; this warp (from stream_fusion.calibrate) registers it.
DEMO_CALIBRATION = ASSETS_DIR / "nato_camp" / "calibration.yaml"
