"""The step benchmark runs and prints its table (figures are for reading, not asserted: no timed tests)."""
from __future__ import annotations

import pytest

from benchmarks.step_benchmark import main


@pytest.mark.parametrize("method", ["kdpl_coop", "promptkd"])
def test_step_benchmark_prints_the_three_variants(method, capsys):
    main(["--method", method, "--classes", "12", "--batch", "2", "--steps", "1", "--warmup", "0"])
    out = capsys.readouterr().out
    for row in ("| ours |", "| cached |", "| reference |", "| floor |", "(b)/(a)", "(a)/(c)", "(a')/(c)"):
        assert row in out
    reference_text = float(out.split("| reference |")[1].split("|")[1])
    assert reference_text > 0  # the reference-style step really recomputes the teacher text features
    ours_text = float(out.split("| ours |")[1].split("|")[1])
    assert ours_text == 0.0
