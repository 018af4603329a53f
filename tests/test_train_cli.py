"""train.py's own checks: trainer-name suggestions (without Dassl), and a failed run's log (with Dassl)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

import train

NAMES = ["CoOp", "KDPL_CoOp", "KDPL_CoCoOp", "KDPL_MaPLe", "PromptKD", "PromptKD_Teacher"]


def test_known_trainer_passes():
    train.check_trainer_name("KDPL_CoOp", NAMES)  # no exit


@pytest.mark.parametrize("name, suggestion", [("KDPL_Coop", "'KDPL_CoOp'? Trainer names are case-sensitive"),
                                              ("kdpl_maple", "'KDPL_MaPLe'? Trainer names are case-sensitive"),
                                              ("PromptKD_Teachr", "did you mean 'PromptKD_Teacher'")])
def test_unknown_trainer_suggests_the_case_insensitive_match(name, suggestion):
    with pytest.raises(SystemExit) as exc:
        train.check_trainer_name(name, NAMES)
    message = str(exc.value)
    assert f"unknown trainer {name!r}" in message and suggestion in message
    assert "KDPL_CoCoOp" not in message.split("Registered trainers:")[0]


def test_unknown_trainer_without_close_match_lists_all():
    with pytest.raises(SystemExit) as exc:
        train.check_trainer_name("Zzz", NAMES)
    assert "no close match" in str(exc.value) and "Registered trainers: CoOp, KDPL_CoCoOp" in str(exc.value)


def test_a_failed_run_writes_its_traceback_into_log_txt(tmp_path):
    """Dassl's logger tees only stdout into log.txt; the error that stops a run must be there too, not only on the
    console (a cluster job's stderr is often elsewhere or lost)."""
    pytest.importorskip("dassl", reason="train.py runs need Dassl (see README, Install)")
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    root = os.path.dirname(os.path.abspath(train.__file__))
    proc = subprocess.run(
        [sys.executable, "train.py", "--root", str(data), "--seed", "1", "--trainer", "KDPL_CoOp",
         "--dataset-config-file", "configs/datasets/eurosat.yaml",
         "--config-file", "configs/trainers/KDPL_CoOp/tiny_vit_ep2_cpu.yaml", "--output-dir", str(out)],
        cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    message = f"DatasetNotFoundError: EuroSAT dataset folder not found: expected the directory {data / 'eurosat'}"
    assert message in proc.stderr  # Python's own report, unchanged
    log = (out / "log.txt").read_text()
    assert "*** Config ***" in log and "Traceback (most recent call last):" in log and message in log
