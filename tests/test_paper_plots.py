"""``--paper`` (ours beside the published numbers) and ``--plot`` (figures + their data) of tools.results, on made-up
output trees; the published numbers' data files themselves. No Dassl needed."""
from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import pytest

from tools import paper as P
from tools import plots
from tools import results as R

ROOT = Path(__file__).resolve().parents[1]


def regime(student: str) -> dict:
    return {"labels": "none", "images": "16-shot base", "class_names": "dataset", "teacher": "ViT-H-14 (dfn5b)",
            "student": student}


def write_run(run_dir: Path, accuracy: float, student: str, **extra) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"trainer": "KDPL_CoOp", "split": "test", "accuracy": accuracy, "error": 100 - accuracy,
              "regime": regime(student), **extra}
    (run_dir / "results.json").write_text(json.dumps(record))


def b2n_tree(root: Path, new: dict, base: float = 80.0, cfg: str = "vit_b32_ctxv1", student: str = "ViT-B/32",
             tag: str = "KDPL_CoOp") -> None:
    """base2new runs of ``tag``: ``new[dataset][seed]`` new-class accuracy, ``base`` + seed on base classes."""
    for dataset, seeds in new.items():
        for seed, value in seeds.items():
            tail = Path(dataset) / "shots_16" / tag / cfg / f"seed{seed}"
            write_run(root / "base2new/train_base" / tail, base + seed, student, subsample_classes="base")
            write_run(root / "base2new/test_base" / tail, base + seed, student, subsample_classes="base",
                      eval_only=True)
            write_run(root / "base2new/test_new" / tail, value, student, subsample_classes="new", eval_only=True)


def paper_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def published(paper: str, **match) -> P.PaperRow:
    (row,) = [r for r in P.load_paper(paper) if all(getattr(r, k) == v for k, v in match.items())]
    return row


# ----------------------------------------------------------------------------------------------- the data


def test_published_numbers_are_consistent_and_cited():
    from tools.datasets_table import DATASETS

    for paper in P.PAPERS:
        rows = P.load_paper(paper)
        assert rows
        for r in rows:
            assert r.dataset in DATASETS or r.dataset == "Average", r
            assert r.metric in ("base", "new", "hm", "accuracy") and 0 < r.value < 100
            assert r.backbone and r.setting and r.source.split("@")[0] in ("miccunifi/KDPL", "zhengli97/PromptKD")
            assert r.trainer.split("-CA")[0] in ("KDPL_CoOp", "KDPL_CoCoOp", "KDPL_VPT", "KDPL_MaPLe",
                                                 "KDPL_PromptSRC", "PromptKD", "PromptKD_Teacher", "ZeroshotCLIP_KD")
    pkd = [r for r in P.load_paper("promptkd") if r.protocol == "base2new" and r.trainer == "PromptKD"
           and r.backbone == "ViT-B/16"]
    cell = {(r.dataset, r.metric): r.value for r in pkd}
    datasets = sorted({d for d, _ in cell if d != "Average"})
    assert len(datasets) == 11
    for d in datasets:  # HM = 2BN/(B+N) as printed, but for the one misprint the paper has (tools/paper_results)
        hm = R.harmonic_mean(cell[(d, "base")], cell[(d, "new")])
        assert abs(hm - cell[(d, "hm")]) < 0.05 or (d, round(hm, 2), cell[(d, "hm")]) == ("ucf101", 85.83, 86.10)
    for metric in ("base", "new"):
        assert statistics.fmean(cell[(d, metric)] for d in datasets) == pytest.approx(cell[("Average", metric)],
                                                                                      abs=0.005)
    dg = [r for r in P.load_paper("kdpl") if r.protocol == "dg"]
    for key in {(r.trainer, r.backbone) for r in dg}:
        values = {r.dataset: r.value for r in dg if (r.trainer, r.backbone) == key}
        targets = [values[d] for d in ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")]
        assert statistics.fmean(targets) == pytest.approx(values["Average"], abs=0.006), key


# ----------------------------------------------------------------------------------------------- --paper


def eleven(level: float) -> dict:
    """New-class accuracy on the 11 datasets: ``level`` ± 5 per dataset, + (seed - 2) per seed, so the per-seed
    Averages are level - 1, level, level + 1 (mean ``level``, population std 0.816)."""
    from tools.datasets_table import BASE2NEW_DATASETS

    offsets = [5, -5] * 5 + [0]
    return {d: {s: level + o + s - 2 for s in (1, 2, 3)} for d, o in zip(BASE2NEW_DATASETS, offsets)}


def test_kdpl_average_new_beside_ours_and_the_flag(tmp_path, capsys):
    paper_new = published("kdpl", protocol="base2new", trainer="KDPL_CoOp", backbone="ViT-B/32").value  # 66.35
    b2n_tree(tmp_path / "close", eleven(66.0))  # Δ = -0.35: within two std (1.63)
    assert R.main([str(tmp_path / "close"), "--paper", "kdpl"]) == 0
    out = capsys.readouterr().out
    assert "### paper: KDPL vs ours, base2new: KDPL_CoOp / vit_b32_ctxv1, 16 shots (ours: ViT-B/32)" in out
    rows = paper_rows(tmp_path / "close/paper_kdpl.csv")
    (avg,) = [r for r in rows if (r["dataset"], r["metric"]) == ("Average", "new")]
    assert float(avg["ours_mean"]) == pytest.approx(66.0) and float(avg["ours_std"]) == pytest.approx(0.8165, abs=1e-4)
    assert float(avg["paper_value"]) == paper_new and float(avg["diff"]) == pytest.approx(66.0 - paper_new)
    assert avg["flagged"] == "False"
    assert f"| 66.00 ± 0.82 (11 datasets) | {paper_new:.2f} | -0.35 |" in out
    assert {r["paper_value"] for r in rows if r["dataset"] == "eurosat"} == {""}  # no per-dataset number published

    b2n_tree(tmp_path / "far", eleven(63.0))  # |Δ| = 3.35 > 2 x 0.816
    assert R.main([str(tmp_path / "far"), "--paper", "kdpl"]) == 0
    assert "| 63.00 ± 0.82 (11 datasets) | 66.35 | -3.35 ! |" in capsys.readouterr().out
    (avg,) = [r for r in paper_rows(tmp_path / "far/paper_kdpl.csv") if (r["dataset"], r["metric"]) == ("Average",
                                                                                                         "new")]
    assert avg["flagged"] == "True" and float(avg["threshold"]) == pytest.approx(2 * 0.8165, abs=1e-3)


def test_rows_match_by_backbone_and_partial_averages_are_not_compared(tmp_path, capsys):
    b2n_tree(tmp_path / "rn50", {"dtd": {1: 64.0}}, cfg="rn50_ctxv1", student="RN50")
    b2n_tree(tmp_path / "tiny", {"dtd": {1: 64.0}}, cfg="tiny", student="tiny-vit")
    assert R.main([str(tmp_path / "rn50"), "--paper", "kdpl"]) == 0
    out = capsys.readouterr().out  # the RN50 row (63.80) is shown, but one dataset's average is not the paper's
    assert "| 64.00 (1 dataset) | 63.80 | - |" in out and "our Average covers 1 dataset only" in out
    (avg,) = [r for r in paper_rows(tmp_path / "rn50/paper_kdpl.csv") if (r["dataset"], r["metric"]) == ("Average",
                                                                                                          "new")]
    assert avg["paper_value"] == "63.80" and avg["paper_backbone"] == "RN50" and avg["diff"] == ""
    assert R.main([str(tmp_path / "tiny"), "--paper", "kdpl"]) == 0
    out = capsys.readouterr().out
    assert "ours is tiny-vit: nothing to compare" in out and "RN50, ViT-B/32" in out


def test_promptkd_dg_one_seed_flags_differences_above_one_point(tmp_path, capsys):
    ours = {}
    for dataset, offset in (("imagenetv2", 0.5), ("imagenet_sketch", 1.5), ("imagenet_a", 0.0), ("imagenet_r", -0.2)):
        value = published("promptkd", protocol="dg", trainer="PromptKD", dataset=dataset).value + offset
        ours[dataset] = value
        run = tmp_path / "evaluation/PromptKD/vit_b16_c2_ep20_batch8_4+4ctx_cross_datasets_0shots" / dataset / "seed1"
        write_run(run, value, "ViT-B/16", trainer="PromptKD", eval_only=True)
    assert R.main([str(tmp_path), "--protocol", "dg", "--paper", "promptkd"]) == 0
    capsys.readouterr()
    rows = {r["dataset"]: r for r in paper_rows(tmp_path / "paper_promptkd.csv")}
    assert rows["imagenetv2"]["flagged"] == "False" and float(rows["imagenetv2"]["diff"]) == pytest.approx(0.5)
    assert rows["imagenet_sketch"]["flagged"] == "True" and float(rows["imagenet_sketch"]["threshold"]) == 1.0
    average = published("promptkd", protocol="dg", trainer="PromptKD", dataset="Average").value
    assert float(rows["Average"]["diff"]) == pytest.approx(statistics.fmean(ours.values()) - average)
    assert rows["Average"]["source"].endswith("Supp. Table 9")


# ----------------------------------------------------------------------------------------------- --plot


def test_bar_figures_hold_the_plotted_numbers(tmp_path, capsys):
    b2n_tree(tmp_path, eleven(66.0))
    assert R.main([str(tmp_path), "--paper", "kdpl", "--plot"]) == 0
    capsys.readouterr()
    stem = tmp_path / "plots/base2new_KDPL_CoOp_vit_b32_ctxv1_16shots"
    assert stem.with_suffix(".png").stat().st_size > 1000
    data = {(r["dataset"], r["metric"]): r for r in paper_rows(stem.with_suffix(".csv"))}
    assert float(data[("dtd", "new")]["ours_mean"]) == pytest.approx(71.0)  # 66 + 5
    assert json.loads(data[("dtd", "new")]["seeds"]) == {"1": 70.0, "2": 71.0, "3": 72.0}
    assert data[("Average", "new")]["paper"] == "66.35" and data[("dtd", "base")]["paper"] == ""
    # the figure's own artists: one bar per dataset and metric at our mean, the paper's beside it
    tables, _ = R.build_tables(tmp_path, "base2new")
    (group,) = P.attach_paper(P.our_groups(tables), "kdpl")
    fig = plots.bar_figure(group)
    bars = {p.get_gid(): p.get_height() for ax in fig.axes for p in ax.patches if p.get_gid()}
    assert bars["ours:dtd:new"] == pytest.approx(71.0) and bars["ours:eurosat:new"] == pytest.approx(61.0)
    assert bars["ours:eurosat:base"] == pytest.approx(82.0)
    assert bars["paper:Average:new"] == pytest.approx(66.35) and "paper:dtd:new" not in bars
    assert len([g for g in bars if g.startswith("ours:")]) == 12 * 3  # 11 datasets + Average, x base/new/HM


def test_training_curves_per_epoch_from_tensorboard(tmp_path):
    pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "base2new/train_base/dtd/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed1"
    board = run / "tensorboard"
    # 4 batches per epoch, logged at batches 2 and 4 (running means), 2 epochs; then a resumed process re-logs epoch 2
    first = SummaryWriter(log_dir=str(board))
    for step, value in ((1, 0.9), (3, 0.8), (5, 0.7), (7, 0.6)):
        first.add_scalar("train/loss", value, step)
        first.add_scalar("train/lr", 0.002, step)
    first.add_scalar("test/accuracy", 50.0, 2)
    first.close()
    resumed = SummaryWriter(log_dir=str(board), filename_suffix=".resumed")
    for step, value in ((5, 0.65), (7, 0.55)):
        resumed.add_scalar("train/loss", value, step)
    resumed.close()
    newest = max(board.glob("events.*"), key=lambda p: p.name.endswith(".resumed"))
    os.utime(newest, (newest.stat().st_atime, newest.stat().st_mtime + 10))
    (run / "log.txt").write_text("epoch [1/2] batch [2/4] time 0.1 loss 0.9\nepoch [1/2] batch [4/4] time 0.1\n")
    written = plots.write_curve_figures([run], tmp_path, tmp_path / "plots")
    csv_path = tmp_path / "plots/curves/base2new/train_base/dtd/shots_16/KDPL_CoOp/vit_b32_ctxv1/seed1.csv"
    assert written == [csv_path.with_suffix(".png"), csv_path]
    rows = [(r["tag"], int(r["epoch"]), float(r["value"])) for r in paper_rows(csv_path)]
    assert [r for r in rows if r[0] == "train/loss"] == [("train/loss", 1, pytest.approx(0.8)),
                                                          ("train/loss", 2, pytest.approx(0.55))]
    assert {r[0] for r in rows} == {"train/loss", "train/lr"}  # training scalars only
    fig = plots.curve_figure(plots.per_epoch(plots.read_scalars(run), 4), "run", "epoch")
    loss_line = [ax for ax in fig.axes if ax.get_ylabel() == "loss"][0].lines[0]
    assert list(loss_line.get_xdata()) == [1, 2] and list(loss_line.get_ydata()) == pytest.approx([0.8, 0.55])
