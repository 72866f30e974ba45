"""``python -m stream_fusion.bench``: the engine benchmark (see :mod:`stream_fusion.bench.engine`)."""
from stream_fusion.bench.engine import main
from stream_fusion.errors import run_cli

run_cli(main)
