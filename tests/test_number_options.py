"""Benchmark options that take seconds, rates or budgets refuse inf, nan, 0 and words in argparse's one error line
(exit 2): ``type=float`` took them, and ``--fps inf`` ran a 'live' benchmark that dropped every frame it could."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream_fusion.config import positive_number

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, value", [("30", 30.0), ("0.5", 0.5), ("1e3", 1000.0)])
def test_positive_number_takes_finite_positive_numbers(text: str, value: float) -> None:
    assert positive_number(text) == value


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "0", "-2", "fast", ""])
def test_positive_number_refuses_the_rest(text: str) -> None:
    with pytest.raises(Exception, match="finite number above 0|not a number"):
        positive_number(text)


@pytest.mark.parametrize("module, option", [("stream_fusion.bench.pipeline", "--fps"),
                                            ("stream_fusion.bench.streams", "--seconds"),
                                            ("stream_fusion.bench", "--budget"),
                                            ("stream_fusion.bench.variants", "--budget")])
def test_a_benchmark_refuses_an_infinite_number_in_one_line(module: str, option: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, option, "inf"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert f"argument {option}: must be a finite number above 0, got 'inf'" in done.stderr.splitlines()[-1]
    assert "Traceback" not in done.stderr
