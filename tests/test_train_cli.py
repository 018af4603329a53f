"""train.py's own checks, without Dassl: trainer-name suggestions."""
from __future__ import annotations

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
