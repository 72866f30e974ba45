"""``python -m stream_fusion.evaluate``: score a folder of fused images (see :mod:`stream_fusion.evaluate.score`)."""
from stream_fusion.errors import run_cli
from stream_fusion.evaluate.score import main

run_cli(main)
