"""Tests of tools/results/ on synthetic output trees (no torch, no Dassl).

Each test writes the directory layout a protocol produces (protocols.md §6, kdpl.md §8) with results.json and/or
Dassl-style log.txt files, then checks the aggregated numbers against hand computations.
"""
from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]  # importable via tests/conftest.py

from tools import results as R  # noqa: E402
from tools.datasets_table import DATASETS, DG_TARGETS, XD_TARGETS, to_key, to_name  # noqa: E402

REGIME = {"labels": "none", "images": "16-shot base", "class_names": "dataset", "teacher": "ViT-H-14 (dfn5b)",
          "student": "ViT-B/32"}


def write_json(run_dir: Path, accuracy: float, **extra) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"trainer": "KDPL_CoOp", "split": "test", "accuracy": accuracy, "error": 100 - accuracy,
              "regime": REGIME, **extra}
    (run_dir / "results.json").write_text(json.dumps(record))
    return run_dir


def dassl_log(accuracy: float, end: str | None = "Finish training", val_accuracies: tuple[float, ...] = (),
              training: bool = True) -> str:
    """A log shaped like Dassl 0.6.3 output: per-epoch val blocks, the end line, the final test block."""
    lines = ["** Arguments **", f"eval_only: {not training}"]
    for epoch, acc in enumerate(val_accuracies, 1):
        if training:
            lines.append(f"epoch [{epoch}/2] batch [5/5] time 0.1 loss 1.0 lr 1e-3 eta 0:00:01")
        lines += ["Evaluate on the *val* set", "=> result", "* total: 100", f"* accuracy: {acc:.1f}%"]
    if training and not val_accuracies:
        lines.append("epoch [1/2] batch [5/5] time 0.1 loss 1.0 lr 1e-3 eta 0:00:01")
    if end is not None:
        lines += [end, "Deploy the last-epoch model"]
    if end is not None or not training:
        lines += ["Evaluate on the *test* set", "=> result", "* total: 100", "* correct: 80",
                  f"* accuracy: {accuracy:.1f}%", f"* error: {100 - accuracy:.1f}%", "* macro_f1: 70.0%",
                  "Elapsed: 0:00:10"]
    return "\n".join(lines) + "\n"


def write_log(run_dir: Path, accuracy: float, name: str = "log.txt", **kwargs) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / name).write_text(dassl_log(accuracy, **kwargs))
    return run_dir


def b2n_dir(root: Path, phase: str, dataset: str, seed: int, tag: str = "KDPL_CoOp", cfg: str = "vit_b32_ctxv1",
            shots: int = 16, seed_fmt: str = "seed{}") -> Path:
    return root / "base2new" / phase / dataset / f"shots_{shots}" / tag / cfg / seed_fmt.format(seed)


def rows_by(table: R.Table, **match) -> list[dict]:
    return [r for r in table.rows if all(r.get(k) == v for k, v in match.items())]


# ----------------------------------------------------------------------------------------------- log parsing


@pytest.mark.parametrize("end", ["Finish training", "Finished training"])
def test_both_end_strings(tmp_path: Path, end: str) -> None:
    write_log(tmp_path, 81.3, end=end, val_accuracies=(50.0, 60.0))
    assert R.parse_log(tmp_path / "log.txt") == pytest.approx(81.3)


def test_last_match_after_signal_only(tmp_path: Path) -> None:
    # Per-epoch val blocks before the end line must not count; an unfinished training log gives nothing.
    write_log(tmp_path, 0.0, end=None, val_accuracies=(50.0, 60.0))
    assert R.parse_log(tmp_path / "log.txt") is None
    assert R.parse_log(tmp_path / "log.txt", test_log=True) == pytest.approx(60.0)


def test_eval_only_log_uses_result_block(tmp_path: Path) -> None:
    write_log(tmp_path, 72.4, end=None, training=False)
    assert R.parse_log(tmp_path / "log.txt") == pytest.approx(72.4)
    assert R.parse_log(tmp_path / "log.txt", test_log=True) == pytest.approx(72.4)


def test_accuracy_regex_accepts_exponents(tmp_path: Path) -> None:
    (tmp_path / "log.txt").write_text("Finish training\n=> result\n* accuracy: 8.15e+01%\n")
    assert R.parse_log(tmp_path / "log.txt") == pytest.approx(81.5)


def test_results_json_wins_over_log(tmp_path: Path) -> None:
    write_log(tmp_path, 80.1)
    write_json(tmp_path, 80.1234567)
    accuracy, source, info, problem = R.read_run(tmp_path)
    assert accuracy == 80.1234567 and source == "results.json" and info["regime"] == REGIME and problem == ""


def test_resumed_run_reads_newest_stamped_log(tmp_path: Path) -> None:
    # Dassl writes log.txt-<timestamp> when a run is resumed into an existing dir; log.txt is the broken first try.
    write_log(tmp_path, 0.0, end=None, val_accuracies=(40.0,))
    write_log(tmp_path, 77.7, name="log.txt-2024-01-02-03-04-05")
    assert R.read_run(tmp_path)[:2] == (77.7, "log.txt-2024-01-02-03-04-05")


# ----------------------------------------------------------------------------------------------- statistics


def test_harmonic_mean() -> None:
    assert R.harmonic_mean(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert R.harmonic_mean(0.0, 0.0) == 0.0
    # PromptKD Tab. 1 average (protocols.md §8): HM(86.96, 80.73) = 83.73.
    assert R.harmonic_mean(86.96, 80.73) == pytest.approx(83.73, abs=0.005)


def test_population_std() -> None:
    stat = R.Stat.of({1: 60.0, 2: 70.0, 3: 80.0})
    assert stat.mean == pytest.approx(70.0)
    assert stat.std == pytest.approx(float(np.std([60.0, 70.0, 80.0])))  # ddof=0, as parse_test_res.py
    assert stat.std != pytest.approx(statistics.stdev([60.0, 70.0, 80.0]))
    assert stat.n == 3


# ----------------------------------------------------------------------------------------------- base-to-new


B2N = {  # dataset -> seed -> (base, new)
    "eurosat": {1: (90.0, 60.0), 2: (94.0, 70.0), 3: (92.0, 50.0)},
    "dtd": {1: (80.0, 55.0), 2: (78.0, 57.0), 3: (79.0, 53.0)},
}


def build_b2n(root: Path, via_log: bool = False) -> None:
    for dataset, seeds in B2N.items():
        for seed, (base, new) in seeds.items():
            write_log(b2n_dir(root, "train_base", dataset, seed), base)  # final test of training = base
            for phase, acc in (("test_base", base), ("test_new", new)):
                run = b2n_dir(root, phase, dataset, seed)
                if via_log:
                    write_log(run, acc, end=None, training=False)
                else:
                    write_json(run, acc, dataset=to_name(dataset), subsample_classes=phase[5:], seed=seed)


@pytest.mark.parametrize("via_log", [False, True])
def test_base2new_table(tmp_path: Path, via_log: bool) -> None:
    build_b2n(tmp_path, via_log=via_log)
    tables, scan = R.build_tables(tmp_path, "base2new")
    (table,) = tables
    assert not scan.warnings and not scan.incomplete and not table.warnings and "Warnings" not in table.markdown
    means = {}
    for dataset, seeds in B2N.items():
        (row,) = rows_by(table, dataset=dataset)
        base = [b for b, _ in seeds.values()]
        new = [n for _, n in seeds.values()]
        assert row["base_mean"] == pytest.approx(np.mean(base))
        assert row["base_std"] == pytest.approx(np.std(base))
        assert row["new_mean"] == pytest.approx(np.mean(new))
        assert row["new_std"] == pytest.approx(np.std(new))
        assert row["base_n"] == row["new_n"] == 3
        assert row["hm"] == pytest.approx(2 * np.mean(base) * np.mean(new) / (np.mean(base) + np.mean(new)))
        per_seed_hm = [2 * b * n / (b + n) for b, n in seeds.values()]
        assert row["hm_seed_mean"] == pytest.approx(np.mean(per_seed_hm))
        assert row["hm_seed_seeds"] == pytest.approx({s: h for s, h in zip(seeds, per_seed_hm)})
        assert row["base_from"] == "test_base"
        assert row["new_seeds"] == {s: n for s, (_, n) in seeds.items()}
        means[dataset] = (np.mean(base), np.mean(new), row["hm"])
    (avg,) = rows_by(table, dataset="Average")
    mean_b = np.mean([m[0] for m in means.values()])
    mean_n = np.mean([m[1] for m in means.values()])
    assert avg["base_mean"] == pytest.approx(mean_b)
    assert avg["new_mean"] == pytest.approx(mean_n)
    assert avg["hm"] == pytest.approx(2 * mean_b * mean_n / (mean_b + mean_n))  # HM of the means...
    assert avg["hm_of_dataset_hms"] == pytest.approx(np.mean([m[2] for m in means.values()]))  # ...not this
    assert avg["hm"] != pytest.approx(avg["hm_of_dataset_hms"])
    assert "**Average** (2 datasets)" in table.markdown and "EuroSAT" in table.markdown


def test_base2new_regime_is_stated(tmp_path: Path) -> None:
    build_b2n(tmp_path)
    (table,), _ = R.build_tables(tmp_path, "base2new")
    row = rows_by(table, dataset="eurosat")[0]
    assert "labels=none" in row["regime"] and "teacher=ViT-H-14 (dfn5b)" in row["regime"]
    assert "class_names=dataset" in table.markdown


def test_base_falls_back_to_train_base_final_test(tmp_path: Path) -> None:
    for seed, (base, new) in B2N["eurosat"].items():
        write_log(b2n_dir(tmp_path, "train_base", "eurosat", seed), base, end="Finished training")
        write_json(b2n_dir(tmp_path, "test_new", "eurosat", seed), new)
    (table,), _ = R.build_tables(tmp_path, "base2new")
    (row,) = rows_by(table, dataset="eurosat")
    assert row["base_mean"] == pytest.approx(92.0) and row["base_from"] == "train_base"


def test_promptkd_reference_train_log_is_not_base(tmp_path: Path) -> None:
    # The PromptKD reference prints the novel accuracy after training: never read it as base.
    write_log(b2n_dir(tmp_path, "train_base", "dtd", 1, tag="PromptKD", shots=0, seed_fmt="seed_{}"), 60.0)
    write_log(b2n_dir(tmp_path, "test_new", "dtd", 1, tag="PromptKD", shots=0), 60.0, end=None, training=False)
    (table,), _ = R.build_tables(tmp_path, "base2new")
    (row,) = rows_by(table, dataset="dtd")
    # seed 1 has no base accuracy, so it is in no mean (its new value is shown per seed, marked left out)
    assert row["base_mean"] is None and row["hm"] is None and row["new_mean"] is None and row["n"] == 0
    assert "test_base missing" in row["excluded_seeds"][1] and "1: -/60.00 (left out)" in table.markdown
    assert not rows_by(table, dataset="Average")


def test_promptkd_layout_shots0_seed_underscore(tmp_path: Path) -> None:
    for seed in (1, 2):
        for phase, acc in (("test_base", 85.0 + seed), ("test_new", 75.0 + seed)):
            write_json(b2n_dir(tmp_path, phase, "caltech101", seed, tag="PromptKD", cfg="vit_b16_c2_ep20",
                               shots=0, seed_fmt="seed_{}"), acc)
    (table,), _ = R.build_tables(tmp_path / "base2new")
    (row,) = rows_by(table, dataset="caltech101")
    assert (row["tag"], row["shots"], row["base_n"]) == ("PromptKD", 0, 2)
    assert row["new_mean"] == pytest.approx(76.5)


def test_groups_by_tag_and_cfg(tmp_path: Path) -> None:
    for tag, base in (("KDPL_CoOp", 80.0), ("KDPL_CoOp-CA", 70.0)):
        write_json(b2n_dir(tmp_path, "test_base", "dtd", 1, tag=tag), base)
        write_json(b2n_dir(tmp_path, "test_new", "dtd", 1, tag=tag), base - 20)
    (table,), _ = R.build_tables(tmp_path, "base2new")
    assert {r["tag"] for r in rows_by(table, dataset="Average")} == {"KDPL_CoOp", "KDPL_CoOp-CA"}
    assert rows_by(table, tag="KDPL_CoOp-CA", dataset="dtd")[0]["base_mean"] == 70.0


def test_mismatched_results_json_is_warned(tmp_path: Path) -> None:
    write_json(b2n_dir(tmp_path, "test_new", "dtd", 1), 50.0, subsample_classes="base", dataset="EuroSAT")
    write_json(b2n_dir(tmp_path, "test_base", "dtd", 1), 60.0, subsample_classes="base", dataset="DescribableTextures")
    _, scan = R.build_tables(tmp_path)
    assert any("subsample_classes 'base', expected 'new'" in w for w in scan.warnings)
    assert any("dataset 'EuroSAT'" in w for w in scan.warnings)


# ----------------------------------------------------------------------------------------------- xd / DG

KDPL_DG_ROW = {"imagenet": 65.97, "imagenetv2": 58.10, "imagenet_sketch": 42.50, "imagenet_a": 31.63,
               "imagenet_r": 67.37}  # kdpl.md §10, ViT-B/32 CoOp + KDPL; Avg (targets) 49.90


def xd_source_dir(root: Path, seed: int = 1, tag: str = "KDPL_CoOp", cfg: str = "vit_b32_ctxv1") -> Path:
    return root / "imagenet" / tag / f"{cfg}_16shots" / f"seed{seed}"


def xd_eval_dir(root: Path, dataset: str, seed: int = 1, tag: str = "KDPL_CoOp", cfg: str = "vit_b32_ctxv1") -> Path:
    return root / "evaluation" / tag / f"{cfg}_16shots" / dataset / f"seed{seed}"


def test_dg_average_excludes_imagenet_and_matches_paper(tmp_path: Path) -> None:
    write_log(xd_source_dir(tmp_path), KDPL_DG_ROW["imagenet"])
    for dataset in DG_TARGETS:
        write_json(xd_eval_dir(tmp_path, dataset), KDPL_DG_ROW[dataset])
    (table,), _ = R.build_tables(tmp_path, "dg")
    (avg,) = rows_by(table, dataset="Average")
    assert avg["mean"] == pytest.approx(49.90, abs=0.005)
    assert avg["targets"] == 4 and avg["complete"] is True
    assert rows_by(table, role="source")[0]["mean"] == pytest.approx(66.0)  # from the log: one decimal
    assert "49.90" in table.markdown


def test_dg_imagenet_from_evaluation_dir_preferred(tmp_path: Path) -> None:
    write_json(xd_source_dir(tmp_path), 60.0)
    for dataset, acc in KDPL_DG_ROW.items():
        write_json(xd_eval_dir(tmp_path, dataset), acc)
    (table,), _ = R.build_tables(tmp_path, "dg")
    assert rows_by(table, role="source")[0]["mean"] == pytest.approx(65.97)
    assert rows_by(table, dataset="Average")[0]["mean"] == pytest.approx(49.90, abs=0.005)


def test_reference_kdpl_cross_layout(tmp_path: Path) -> None:
    old = tmp_path / "cross_domain_and_datasets"
    for dataset, acc in KDPL_DG_ROW.items():
        phase = "train" if dataset == "imagenet" else "test"
        write_log(old / phase / dataset / "shots_16" / "KDPL_CoOp-CA" / "vit_b32_ctxv1" / "seed1", acc,
                  end="Finished training" if phase == "train" else None, training=phase == "train")
    (table,), _ = R.build_tables(tmp_path, "dg")
    assert rows_by(table, dataset="Average")[0]["mean"] == pytest.approx(49.90, abs=0.005)
    assert rows_by(table, role="source")[0]["tag"] == "KDPL_CoOp-CA"


def test_xd_mean_of_ten_targets(tmp_path: Path) -> None:
    values = {d: 50.0 + i for i, d in enumerate(XD_TARGETS)}
    for seed in (1, 2):
        write_json(xd_source_dir(tmp_path, seed), 66.0)
        for dataset, acc in values.items():
            write_json(xd_eval_dir(tmp_path, dataset, seed), acc + seed)
    for dataset in DG_TARGETS:  # DG targets must stay out of the xd average
        write_json(xd_eval_dir(tmp_path, dataset, 1), 0.0)
    tables, _ = R.build_tables(tmp_path)
    xd = {t.protocol: t for t in tables}["xd"]
    (avg,) = rows_by(xd, dataset="Average")
    assert avg["mean"] == pytest.approx(np.mean(list(values.values())) + 1.5)
    assert avg["targets"] == 10 and avg["complete"] is True
    assert avg["std"] == pytest.approx(0.5)  # per-seed averages 1 apart
    assert {r["dataset"] for r in rows_by(xd, role="target")} == set(XD_TARGETS)
    assert "fewshot" not in {t.protocol for t in tables}  # the ImageNet source is not a few-shot result


def test_xd_incomplete_targets_flagged(tmp_path: Path) -> None:
    write_json(xd_eval_dir(tmp_path, "dtd"), 40.0)
    write_json(xd_eval_dir(tmp_path, "eurosat"), 50.0)
    (table,), _ = R.build_tables(tmp_path, "xd")
    (avg,) = rows_by(table, dataset="Average")
    assert avg["mean"] == pytest.approx(45.0) and avg["complete"] is False
    assert "(2/10)" in table.markdown


def test_promptkd_per_target_xd(tmp_path: Path) -> None:
    for dataset, acc in (("dtd", 50.0), ("eurosat", 60.0)):
        write_json(tmp_path / dataset / "PromptKD" / "vit_b16_0shots" / "seed1", acc)
    (table,), _ = R.build_tables(tmp_path, "xd")
    assert rows_by(table, dataset="Average")[0]["mean"] == pytest.approx(55.0)


# ----------------------------------------------------------------------------------------------- few-shot, DFKD


def test_fewshot_table(tmp_path: Path) -> None:
    for shots in (1, 16):
        for seed in (1, 2, 3):
            write_json(tmp_path / "dtd" / "KDPL_CoOp" / f"vit_b32_ctxv1_{shots}shots" / f"seed{seed}",
                       40.0 + shots + seed)
            write_json(tmp_path / "eurosat" / "KDPL_CoOp" / f"vit_b32_ctxv1_{shots}shots" / f"seed{seed}",
                       60.0 + shots)
    (table,), _ = R.build_tables(tmp_path, "fewshot")
    (row,) = rows_by(table, dataset="dtd", shots=16)
    assert row["mean"] == pytest.approx(58.0) and row["std"] == pytest.approx(np.std([57, 58, 59]))
    (avg,) = rows_by(table, dataset="Average", shots=1)
    assert avg["mean"] == pytest.approx((43.0 + 61.0) / 2)
    assert "16 shots" in table.markdown


def test_dfkd_per_domain(tmp_path: Path) -> None:
    base = tmp_path / "dfkd" / "pacs" / "DFKD_Contrastive" / "rn18"
    for seed, shift in ((1, 0.0), (2, 2.0)):
        write_json(base / f"seed{seed}", 70.0 + shift, domains={"art_painting": 60.0 + shift, "photo": 90.0 + shift})
    (table,), _ = R.build_tables(tmp_path, "dfkd")
    assert rows_by(table, domain="photo")[0]["mean"] == pytest.approx(91.0)
    (mean,) = rows_by(table, domain="Mean")
    assert mean["mean"] == pytest.approx(76.0) and mean["std"] == pytest.approx(1.0) and mean["n"] == 2
    assert rows_by(table, domain="Overall")[0]["mean"] == pytest.approx(71.0)


# --------------------------------------------------------------------------------------------- no silently wrong number


def test_b2n_seed_missing_test_new_is_left_out_and_named(tmp_path: Path) -> None:
    build_b2n(tmp_path)
    missing = b2n_dir(tmp_path, "test_new", "eurosat", 2)
    (missing / "results.json").unlink()
    missing.rmdir()
    (table,), scan = R.build_tables(tmp_path, "base2new")
    (row,) = rows_by(table, dataset="eurosat")
    complete = {1: (90.0, 60.0), 3: (92.0, 50.0)}  # seed 2 has no new accuracy
    assert row["base_mean"] == pytest.approx(91.0)  # not the mean over seeds 1+2+3 (92.0)
    assert row["base_seeds"] == {1: 90.0, 3: 92.0} and row["new_mean"] == pytest.approx(55.0)
    assert row["n"] == row["base_n"] == row["new_n"] == 2
    assert row["hm"] == pytest.approx(R.harmonic_mean(91.0, 55.0))
    assert row["hm_seed_seeds"] == pytest.approx({s: R.harmonic_mean(b, n) for s, (b, n) in complete.items()})
    assert f"test_new missing (expected {missing.resolve()})" in row["excluded_seeds"][2]
    warning = next(w for w in table.warnings if "seed 2" in w)
    assert "eurosat" in warning and str(missing.resolve()) in warning
    (avg,) = rows_by(table, dataset="Average")  # from the complete seeds only
    assert avg["base_mean"] == pytest.approx((91.0 + 79.0) / 2) and avg["new_mean"] == pytest.approx(55.0)
    assert avg["same_seeds"] is False and avg["n"] == 2
    assert any("different seeds (dtd: 1,2,3; eurosat: 1,3)" in w for w in table.warnings)
    assert "2: 94.00/- (left out)" in table.markdown and "**Warnings**" in table.markdown
    assert not scan.warnings  # nothing wrong with the files themselves


def test_b2n_one_seed_shows_no_spread(tmp_path: Path) -> None:
    write_json(b2n_dir(tmp_path, "test_base", "dtd", 1), 80.0)
    write_json(b2n_dir(tmp_path, "test_new", "dtd", 1), 60.0)
    (table,), _ = R.build_tables(tmp_path, "base2new")
    (row,) = rows_by(table, dataset="dtd")
    assert row["n"] == 1 and row["base_std"] is None and row["new_std"] is None
    assert "±" not in table.markdown and "| 80.00 | 60.00 |" in table.markdown


def test_b2n_unreadable_run_is_named_with_its_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_json(b2n_dir(tmp_path, "test_base", "dtd", 1), 80.0)
    write_json(b2n_dir(tmp_path, "test_new", "dtd", 1), 60.0)
    write_json(b2n_dir(tmp_path, "test_base", "dtd", 2), 70.0)
    broken = b2n_dir(tmp_path, "test_new", "dtd", 2)
    broken.mkdir(parents=True)
    (broken / "results.json").write_text('{"accuracy": 61.2')  # truncated, and no log to fall back on
    (table,), scan = R.build_tables(tmp_path, "base2new")
    (row,) = rows_by(table, dataset="dtd")
    assert row["base_mean"] == 80.0 and row["new_mean"] == 60.0 and row["n"] == 1
    assert scan.incomplete == [broken.resolve()]
    assert "results.json invalid JSON" in scan.problems[broken.resolve()]
    assert f"test_new unreadable at {broken.resolve()}: results.json invalid JSON" in row["excluded_seeds"][2]
    assert R.main([str(tmp_path), "--protocol", "base2new"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {broken.resolve()} skipped: results.json invalid JSON" in err
    assert "seed 2 left out of every mean" in err
    payload = json.loads((tmp_path / "results_base2new.json").read_text())
    assert any("seed 2 left out" in w for w in payload["warnings"])
    assert payload["incomplete"][0]["path"] == str(broken.resolve())


@pytest.mark.parametrize("content,reason", [
    ("{not json", "invalid JSON"),
    ("[80.0]", "top level is a JSON list, not an object"),
    ('{"split": "test"}', "no 'accuracy' field"),
    ('{"accuracy": "80.1"}', "'accuracy' is '80.1', not a finite number"),
    ('{"accuracy": NaN}', "'accuracy' is nan, not a finite number"),
    ('{"accuracy": true}', "'accuracy' is True, not a finite number"),
    ('{"accuracy": 180.0}', "'accuracy' is 180.0, outside 0-100"),
    ('{"accuracy": 80.0, "domains": {"photo": null}}', "'domains.photo' is None"),
    ('{"accuracy": 80.0, "regime": "none"}', "'regime' is 'none', expected a dict"),
    ('{"accuracy": 80.0, "shots_used": {"min": 8}}', "'shots_used' is {'min': 8}"),
])
def test_corrupt_results_json_is_named_and_log_fallback_warned(tmp_path: Path, content: str, reason: str) -> None:
    run = write_log(b2n_dir(tmp_path, "test_base", "dtd", 1), 80.1, end=None, training=False)
    (run / "results.json").write_text(content)
    write_json(b2n_dir(tmp_path, "test_new", "dtd", 1), 60.0)
    (table,), scan = R.build_tables(tmp_path, "base2new")
    assert rows_by(table, dataset="dtd")[0]["base_mean"] == pytest.approx(80.1)  # the log's one-decimal value
    (warning,) = scan.warnings
    assert warning.startswith(f"{run.resolve() / 'results.json'}: {reason}")
    assert warning.endswith("using the one-decimal accuracy 80.1 from log.txt instead")


def test_xd_seed_missing_a_target_is_left_out(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_json(xd_source_dir(tmp_path, seed), 60.0 + seed)
        write_json(xd_eval_dir(tmp_path, "dtd", seed), 40.0 + seed)
    write_json(xd_eval_dir(tmp_path, "eurosat", 1), 50.0)  # seed 2 never tested on EuroSAT
    (table,), _ = R.build_tables(tmp_path, "xd")
    assert rows_by(table, dataset="dtd")[0]["mean"] == pytest.approx(41.0)  # seed 1 only, not 41.5
    assert rows_by(table, role="source")[0]["mean"] == pytest.approx(61.0)
    (avg,) = rows_by(table, dataset="Average")
    assert avg["mean"] == pytest.approx(45.5) and avg["n"] == 1 and avg["std"] is None
    expected = xd_eval_dir(tmp_path, "eurosat", 2).resolve()
    assert avg["excluded_seeds"] == {2: f"eurosat missing (expected {expected})"}
    assert any("seed 2 left out" in w and str(expected) in w for w in table.warnings)


def test_dfkd_n_counts_seeds_not_domains(tmp_path: Path) -> None:
    base = tmp_path / "dfkd" / "pacs" / "DFKD_Mix" / "rn18"
    write_json(base / "seed1", 70.0, domains={"art_painting": 60.0, "cartoon": 65.0, "photo": 90.0, "sketch": 50.0})
    (table,), _ = R.build_tables(tmp_path, "dfkd")
    (mean,) = rows_by(table, domain="Mean")
    assert mean["mean"] == pytest.approx(66.25) and mean["n"] == 1 and mean["std"] is None
    assert mean["domains"] == 4
    assert "±" not in table.markdown and "| 66.25 | 70.00 | 1 |" in table.markdown


def test_dfkd_seed_without_domains_is_left_out(tmp_path: Path) -> None:
    base = tmp_path / "dfkd" / "pacs" / "DFKD_Mix" / "rn18"
    write_json(base / "seed1", 70.0, domains={"photo": 90.0, "sketch": 50.0})
    write_log(base / "seed2", 20.0)  # a log has no per-domain values
    (table,), _ = R.build_tables(tmp_path, "dfkd")
    assert rows_by(table, domain="Overall")[0]["mean"] == pytest.approx(70.0)  # not (70 + 20) / 2
    (mean,) = rows_by(table, domain="Mean")
    assert mean["mean"] == pytest.approx(70.0) and mean["n"] == 1 and set(mean["excluded_seeds"]) == {2}
    assert any("domain 'photo' has no accuracy in" in w and "seed 2" in w for w in table.warnings)


def test_fewer_shots_than_asked_is_flagged(tmp_path: Path) -> None:
    short = tmp_path / "dtd" / "KDPL_CoOp" / "vit_b32_ctxv1_16shots"
    write_json(short / "seed1", 50.0, num_shots=16, eval_only=False, shots_used={"min": 8, "max": 16})
    write_json(short / "seed2", 52.0, num_shots=16, eval_only=False, shots_used={"min": 16, "max": 16})
    (table,), _ = R.build_tables(tmp_path, "fewshot")
    (row,) = rows_by(table, dataset="dtd", shots=16)
    assert row["shots_used_min"] == 8 and "51.00 ± 1.00 †" in table.markdown
    (warning,) = table.warnings
    assert str((short / "seed1").resolve()) in warning and "asked for 16 shots but trained on 8-16" in warning


def test_short_new_classes_of_an_eval_run_are_not_flagged(tmp_path: Path) -> None:
    # test_new's training list is the new classes' sample, which nothing was trained on
    write_json(b2n_dir(tmp_path, "train_base", "dtd", 1), 80.0, num_shots=16, eval_only=False,
               shots_used={"min": 16, "max": 16})
    write_json(b2n_dir(tmp_path, "test_new", "dtd", 1), 60.0, num_shots=16, eval_only=True,
               shots_used={"min": 4, "max": 16})
    (table,), _ = R.build_tables(tmp_path, "base2new")
    assert rows_by(table, dataset="dtd")[0]["shots_used_min"] is None and not table.warnings
    write_json(b2n_dir(tmp_path, "train_base", "dtd", 1), 80.0, num_shots=16, eval_only=False,
               shots_used={"min": 8, "max": 8})
    (table,), _ = R.build_tables(tmp_path, "base2new")
    assert rows_by(table, dataset="dtd")[0]["shots_used_min"] == 8 and "| DTD † |" in table.markdown


def test_fewshot_average_over_different_seeds_is_warned(tmp_path: Path) -> None:
    for dataset, seeds in (("dtd", (1, 2)), ("eurosat", (1,))):
        for seed in seeds:
            write_json(tmp_path / dataset / "KDPL_CoOp" / "vit_b32_ctxv1_4shots" / f"seed{seed}", 50.0 + seed)
    (table,), _ = R.build_tables(tmp_path, "fewshot")
    (avg,) = rows_by(table, dataset="Average")
    assert avg["mean"] == pytest.approx((51.5 + 51.0) / 2) and avg["std"] is None and avg["same_seeds"] is False
    assert avg["n"] == 1 and avg["seeds"] == {}
    assert table.warnings == ["fewshot KDPL_CoOp/vit_b32_ctxv1 4 shots: the Average combines datasets measured on "
                              "different seeds (dtd: 1,2; eurosat: 1)"]


# ----------------------------------------------------------------------------------------------- errors, CLI


def test_clear_error_when_empty(tmp_path: Path) -> None:
    with pytest.raises(R.ResultsNotFound, match=r"no results under .*: expected"):
        R.build_tables(tmp_path)
    with pytest.raises(R.ResultsNotFound, match="not a directory"):
        R.build_tables(tmp_path / "missing")


def test_error_names_other_layouts_and_incomplete_runs(tmp_path: Path) -> None:
    write_json(xd_eval_dir(tmp_path, "dtd"), 40.0)
    write_log(b2n_dir(tmp_path, "train_base", "dtd", 1), 0.0, end=None, val_accuracies=(30.0,))
    with pytest.raises(R.ResultsNotFound) as err:
        R.build_tables(tmp_path, "base2new")
    message = str(err.value)
    assert "base2new/{train_base,test_base,test_new}" in message
    assert "xd_eval" in message and "no final result yet" in message


def test_cli_writes_csv_json_md(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_b2n(tmp_path / "output")
    out = tmp_path / "tables"
    assert R.main([str(tmp_path / "output"), "--out-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| Dataset | Base | New | HM |" in stdout
    payload = json.loads((out / "results_base2new.json").read_text())
    assert payload["protocol"] == "base2new" and len(payload["rows"]) == 3
    with open(out / "results_base2new.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["dataset"] for r in rows] == ["dtd", "eurosat", "Average"] or \
        [r["dataset"] for r in rows] == ["eurosat", "dtd", "Average"]
    assert float(rows[-1]["hm"]) == pytest.approx(payload["rows"][-1]["hm"])
    assert (out / "results_base2new.md").read_text().startswith("### base2new")


def test_cli_default_out_dir_and_empty_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert R.main([str(tmp_path)]) == 2
    assert "no results under" in capsys.readouterr().err
    build_b2n(tmp_path)
    assert R.main([str(tmp_path), "--protocol", "base2new"]) == 0
    assert (tmp_path / "results_base2new.csv").is_file()


def test_cli_as_module(tmp_path: Path) -> None:
    import subprocess

    build_b2n(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "tools.results", str(tmp_path), "--test-log"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Average" in proc.stdout


# ----------------------------------------------------------------------------------------------- a new protocol

TOY_PROTOCOL = '''"""A toy protocol: mean accuracy per trainer and dataset of the runs under toy/DATASET/TAG/seedS."""
from tools.results.layout import register_layout
from tools.results.registry import register
from tools.results.stats import Stat, stat_fields
from tools.results.table import Table, accuracies, index_runs
from tools.results.writers import fmt, md_table


@register_layout
def toy_layout(part):
    if part(-4) == "toy":
        return {"layout": "toy", "dataset": part(-3), "tag": part(-2), "cfg": "-", "shots": None}
    return None


@register("toy", order=60, layout="toy/DATASET/TAG/seedS")
def build(ctx):
    index = index_runs([r for r in ctx.scan.runs if r.layout == "toy"], lambda r: (r.tag, r.dataset), ctx.scan)
    if not index:
        return None
    rows, cells = [], []
    for (tag, dataset), seeds in sorted(index.items()):
        stat = Stat.of(accuracies(seeds))
        rows.append({"protocol": "toy", "tag": tag, "dataset": dataset, **stat_fields(stat)})
        cells.append([tag, dataset, fmt(stat)])
    return Table.noted("toy", rows, "### toy\\n\\n" + md_table(["Trainer", "Dataset", "Accuracy"], cells), [])
'''
TOY_ROW = "| KDPL_CoOp | eurosat | 75.00 ± 5.00 |"


def build_toy(root: Path) -> None:
    for seed, acc in ((1, 70.0), (2, 80.0)):
        write_json(root / "toy" / "eurosat" / "KDPL_CoOp" / f"seed{seed}", acc)


def test_a_new_protocol_is_one_module_registering_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A protocol (with its own layout) defined outside the package joins the CLI, auto mode and the error message."""
    import importlib.util

    from tools.results import registry

    build_toy(tmp_path / "out")
    build_b2n(tmp_path / "out")
    builtin = registry.names()
    assert builtin == ("base2new", "xd", "dg", "fewshot", "dfkd")
    _, scan = R.build_tables(tmp_path / "out")
    assert len(scan.unrecognised) == 2  # unknown before the protocol exists
    with pytest.raises(SystemExit):
        R.main([str(tmp_path / "out"), "--protocol", "toy"])
    (tmp_path / "toy_protocol.py").write_text(TOY_PROTOCOL)
    spec = importlib.util.spec_from_file_location("toy_protocol", tmp_path / "toy_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        assert registry.names() == (*builtin, "toy")
        tables, scan = R.build_tables(tmp_path / "out")
        assert [t.protocol for t in tables] == ["base2new", "toy"] and not scan.unrecognised
        (row,) = tables[1].rows
        assert (row["mean"], row["std"], row["n"], row["seeds"]) == (75.0, 5.0, 2, {1: 70.0, 2: 80.0})
        assert R.main([str(tmp_path / "out"), "--protocol", "toy", "--out-dir", str(tmp_path / "tables")]) == 0
        assert TOY_ROW in capsys.readouterr().out
        assert (tmp_path / "tables" / "results_toy.md").read_text().startswith("### toy")
        with pytest.raises(R.ResultsNotFound, match="toy: toy/DATASET/TAG/seedS"):
            R.build_tables(tmp_path / "empty", "toy")
        with pytest.raises(ValueError, match="'toy' is already registered by toy_protocol"):
            registry.register("toy", order=70, layout="-")(module.build)
    finally:
        registry.unregister("toy")
        R.unregister_layout(module.toy_layout)
    assert registry.names() == builtin


def test_a_new_protocol_file_in_the_package_is_found(tmp_path: Path) -> None:
    """Dropping one file into tools/results/protocols/ (of a copy of the package) is all it takes."""
    import os
    import shutil
    import subprocess

    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "tools" / "results", copy / "tools" / "results", ignore=ignore)
    for name in ("__init__.py", "datasets_table.py"):
        shutil.copy(ROOT / "tools" / name, copy / "tools" / name)
    (copy / "tools" / "results" / "protocols" / "toy.py").write_text(TOY_PROTOCOL)
    build_toy(tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy, not this checkout
    proc = subprocess.run([sys.executable, "-m", "tools.results", str(tmp_path / "out"), "--protocol", "toy"],
                          cwd=copy, capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    assert TOY_ROW in proc.stdout and (tmp_path / "out" / "results_toy.csv").is_file()
    assert f"wrote {tmp_path / 'out' / 'results_toy.csv'}" in proc.stderr


# ----------------------------------------------------------------------------------------------- dataset table


def test_dataset_name_mapping_round_trips() -> None:
    assert len(DATASETS) == 15
    for key, name in DATASETS.items():
        assert to_key(name) == key and to_key(key) == key and to_name(key) == name
    assert to_key("describabletextures") == "dtd"
    assert to_key("PACSNamed") == "pacs" and to_name("imageclef_da") == "ImageCLEFDA"  # the DFKD benchmarks
    assert to_key("MyOwnSet") == "MyOwnSet"  # unknown datasets pass through
    assert len(XD_TARGETS) == 10 and "imagenet" not in XD_TARGETS
