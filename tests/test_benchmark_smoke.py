"""The step benchmark runs and prints its table (figures are for reading, not asserted: no timed tests)."""
from __future__ import annotations

import pytest

from benchmarks.step_benchmark import main


@pytest.mark.parametrize("method", ["kdpl_coop", "promptkd"])
def test_step_benchmark_prints_the_three_variants(method, capsys):
    ratios = main(["--method", method, "--classes", "12", "--batch", "2", "--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    # each printed ratio is the one returned, and each target of the method gets a verdict line
    assert f"(b)/(a): {ratios['(b)/(a)']:.2f}x" in out
    assert out.count("target ") == {"kdpl_coop": 2, "promptkd": 1}[method]
    for row in ("| ours |", "| cached |", "| reference |", "| floor |", "(b)/(a)", "(a)/(c)", "(a')/(c)"):
        assert row in out
    reference_text = float(out.split("| reference |")[1].split("|")[1])
    assert reference_text > 0  # the reference-style step really recomputes the teacher text features
    ours_text = float(out.split("| ours |")[1].split("|")[1])
    assert ours_text == 0.0


def test_target_bounds():
    from benchmarks.step_benchmark import ratio_meets

    assert ratio_meets(3.0, 3.0) and not ratio_meets(2.9, 3.0)
    assert ratio_meets(1.15, -1.15) and not ratio_meets(1.2, -1.15)
