"""The step benchmark compares what it claims to compare (figures themselves are never asserted: no timed tests).

* each variant's first-step loss equals the method's formula on the same inputs (so ours, the reference and the
  floor train the same thing, and our text-encoder shortcuts are exact);
* the reference variants really do the authors' per-step work and ours does not: text-tower passes (and their
  sequence length), image-tower passes, host reads and NumPy sampling are counted during one step;
* the printed ratios and verdicts are computed from the printed totals, and the totals from the parts.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import contextmanager
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import benchmarks.step_benchmark as sb
from trainers.core.encoders import run_stock_block, run_stock_block_pooled
from trainers.core.losses import promptkd_loss, symmetric_kl

CPU = torch.device("cpu")
CLASSES, BATCH = 6, 2


def build(method: str):
    args = sb.parse_args(["--method", method, "--classes", str(CLASSES), "--batch", str(BATCH), "--steps", "1",
                          "--warmup", "0"])
    return args, {v.name: v for v in sb.build_variants(args, CPU)}


def first_block(tower: nn.Module) -> nn.Module:
    return tower.transformer.resblocks[0]


@contextmanager
def counting(monkeypatch, towers: Dict[str, nn.Module]) -> Iterator[Dict[str, object]]:
    """Count host reads (``.item()``, ``.cpu()``, ``torch.isfinite``) and ``np.argpartition`` calls, and record per
    tower every pass through its first residual block: ``tokens`` (sequence length x sequences, whatever the path:
    its ``ln_1`` runs in CLIP's own block forward and in our driven blocks alike) and ``module`` ((length, sequences)
    of calls to the block's own forward, i.e. CLIP's module path, sequence-first)."""
    counts: Dict[str, object] = {"item": 0, "cpu": 0, "isfinite": 0, "argpartition": 0}
    tokens: Dict[str, List[int]] = {name: [] for name in towers}
    module: Dict[str, List[tuple]] = {name: [] for name in towers}
    counts["tokens"], counts["module"] = tokens, module

    def counted(key, fn):
        def wrapper(*a, **k):
            counts[key] += 1
            return fn(*a, **k)
        return wrapper

    hooks = []
    for n, tower in towers.items():
        block = first_block(tower)
        hooks.append(block.ln_1.register_forward_hook(
            lambda m, inp, out, n=n: tokens[n].append(inp[0].numel() // inp[0].shape[-1])))
        hooks.append(block.register_forward_hook(lambda m, inp, out, n=n: module[n].append(tuple(inp[0].shape[:2]))))
    with monkeypatch.context() as m:
        m.setattr(torch.Tensor, "item", counted("item", torch.Tensor.item))
        m.setattr(torch.Tensor, "cpu", counted("cpu", torch.Tensor.cpu))
        m.setattr(torch, "isfinite", counted("isfinite", torch.isfinite))
        m.setattr(np, "argpartition", counted("argpartition", np.argpartition))
        try:
            yield counts
        finally:
            for h in hooks:
                h.remove()


def step(variant) -> torch.Tensor:
    variant.last_loss = variant.train_step(sb.PartTimer(CPU))
    return variant.last_loss


def longest_prompt_tokens(variant) -> int:
    """Tokens up to and including the end-of-text token of the longest training prompt of our student."""
    return int(variant.student.class_sets["classes_train"].eot_index.max()) + 1


# --------------------------------------------------------------------------------------------------- KDPL_CoOp
def test_kdpl_first_step_losses_equal_the_formulas(single_thread):
    _, v = build("kdpl_coop")
    ours, images, labels = v["ours"], v["ours"].bench.images, v["ours"].bench.labels
    with torch.no_grad():
        t = ours.teacher.logits(images, ours.student.logit_scale)
        s = ours.student(images, key="train")
    pt, ps = t.softmax(-1), s.softmax(-1)
    formula = 0.5 * (pt * (pt.log() - ps.log())).sum() / BATCH + 0.5 * (ps * (ps.log() - pt.log())).sum() / BATCH
    torch.testing.assert_close(symmetric_kl(t, s)[0], formula, rtol=1e-5, atol=1e-6)
    losses = {name: float(step(variant)) for name, variant in v.items()}
    assert losses["ours"] == pytest.approx(float(formula), rel=1e-5)
    # the authors' path (77 tokens, NumPy-permuted classes, kl_div) trains the same loss
    assert losses["reference"] == pytest.approx(float(formula), rel=1e-4)
    assert losses["cached"] == pytest.approx(float(formula), rel=2e-2)  # fp16 cache rows
    assert losses["floor"] == pytest.approx(float(F.cross_entropy(s, labels)), rel=1e-4)
    assert losses["ours"] > 0


def test_kdpl_reference_does_the_kdpl_code_work_and_ours_does_not(single_thread, monkeypatch):
    _, v = build("kdpl_coop")
    ours, cached, ref, floor = v["ours"], v["cached"], v["reference"], v["floor"]
    assert ref.teacher_text.shape[0] == CLASSES  # the teacher's text features: computed once, at build time
    towers = {"ours teacher text": ours.teacher.model, "ours teacher image": ours.teacher.model.visual,
              "ours student text": ours.student.clip, "ours student image": ours.student.clip.visual,
              "cached student text": cached.student.clip, "cached student image": cached.student.clip.visual,
              "ref teacher text": ref.teacher, "ref teacher image": ref.teacher.visual,
              "ref student text": ref.student.clip, "ref student image": ref.student.clip.visual,
              "floor student text": floor.student.clip}
    runs = {}
    for name, variant in v.items():
        with counting(monkeypatch, towers) as c:
            step(variant)
        runs[name] = c
    host = {name: {k: c[k] for k in ("item", "cpu", "isfinite", "argpartition")} for name, c in runs.items()}
    tok = {name: c["tokens"] for name, c in runs.items()}
    cut = longest_prompt_tokens(ours)
    prefix = 1 + ours.student.prompt_learner.n_ctx  # SOS + context: run once, then every class's own tokens
    # ours: the teacher image tower once, no teacher text, the student's prompts cut after their EOT and their shared
    # prefix run once, no host read
    assert host["ours"] == {"item": 0, "cpu": 0, "isfinite": 0, "argpartition": 0}
    assert len(tok["ours"]["ours teacher image"]) == 1 and tok["ours"]["ours teacher text"] == []
    assert cut < 77 and tok["ours"]["ours student text"] == [prefix, CLASSES * (cut - prefix)]
    assert len(tok["ours"]["ours student image"]) == 1
    # cached: neither the teacher nor the student's frozen image tower runs
    assert host["cached"] == host["ours"]
    assert tok["cached"]["ours teacher image"] == [] and tok["cached"]["cached student image"] == []
    assert tok["cached"]["cached student text"] == [prefix, CLASSES * (cut - prefix)]
    # reference (KDPL's code): teacher image every step, teacher text never, host sampling, 3 .item(), anomaly read
    assert host["reference"] == {"item": 3, "cpu": 1, "isfinite": 1, "argpartition": 1}
    assert len(tok["reference"]["ref teacher image"]) == 1 and tok["reference"]["ref teacher text"] == []
    # CoOp's TextEncoder: all 77 tokens of every class through CLIP's own block forward
    assert runs["reference"]["module"]["ref student text"] == [(77, CLASSES)]
    assert tok["reference"]["ref student text"] == [77 * CLASSES]
    assert len(runs["reference"]["module"]["ref student image"]) == 1
    assert tok["reference"]["ours teacher image"] == []  # its own teacher, not ours
    # floor (CoOp's code): no teacher, 77 tokens, loss and accuracy read on the host
    assert host["floor"] == {"item": 2, "cpu": 0, "isfinite": 1, "argpartition": 0}
    assert runs["floor"]["module"]["floor student text"] == [(77, CLASSES)]
    assert tok["floor"]["ref teacher image"] == tok["floor"]["ours teacher image"] == []


def test_kdpl_host_sampling_is_a_permutation_of_all_classes_when_k_is_all():
    logits = torch.randn(3, 7)
    idx = sb.kdpl_host_sampling(logits, 7)
    assert isinstance(idx, np.ndarray) and sorted(idx.tolist()) == list(range(7))
    top = sb.kdpl_host_sampling(logits, 2)
    assert set(top.tolist()) == set(logits.softmax(-1).mean(0).topk(2).indices.tolist())


# ---------------------------------------------------------------------------------------------------- PromptKD
def test_promptkd_first_step_losses_equal_the_formulas(single_thread):
    _, v = build("promptkd")
    ours = v["ours"]
    images, labels = ours.bench.images, ours.bench.labels
    with torch.no_grad():
        t = ours.teacher.logits(images, ours.teacher.logit_scale)
        s = ours.student(images, key="train")
    pt, ps = t.softmax(-1), s.softmax(-1)
    formula = (pt * (pt.log() - ps.log())).sum() / (BATCH * CLASSES)
    torch.testing.assert_close(promptkd_loss(t, s), formula, rtol=1e-5, atol=1e-7)
    losses = {name: float(step(variant)) for name, variant in v.items()}
    assert losses["ours"] == pytest.approx(float(formula), rel=1e-5)
    assert losses["reference"] == pytest.approx(float(formula), rel=1e-4)  # W recomputed at 77 tokens: same W
    assert losses["cached"] == pytest.approx(float(formula), rel=2e-2)
    assert losses["floor"] == pytest.approx(float(F.cross_entropy(s, labels)), rel=1e-4)


def test_promptkd_reference_runs_the_teacher_text_tower_every_train_and_test_step(single_thread, monkeypatch):
    _, v = build("promptkd")
    ours, ref = v["ours"], v["reference"]
    towers = {"ours teacher text": ours.teacher.model, "ours teacher image": ours.teacher.model.visual,
              "ref teacher text": ref.teacher, "ref teacher image": ref.teacher.visual}
    with counting(monkeypatch, towers) as c_ours:
        step(ours)
    with counting(monkeypatch, towers) as c_ref:
        step(ref)
    assert c_ours["tokens"]["ours teacher text"] == [] and len(c_ours["tokens"]["ours teacher image"]) == 1
    assert c_ours["item"] == 0 and c_ours["cpu"] == 0
    # all N classes at 77 tokens through CLIP's own blocks, every step; then the prompted image tower; one .item()
    assert c_ref["module"]["ref teacher text"] == [(77, CLASSES)]
    assert len(c_ref["module"]["ref teacher image"]) == 1 and c_ref["item"] == 1
    assert c_ref["tokens"]["ours teacher text"] == [] and c_ref["tokens"]["ours teacher image"] == []
    with counting(monkeypatch, towers) as t_ours:
        ours.test_step()
    with counting(monkeypatch, towers) as t_ref:
        out = ref.test_step()
    assert all(passes == [] for passes in t_ours["tokens"].values())  # the teacher never runs at test time
    assert t_ref["module"]["ref teacher text"] == [(77, CLASSES)] and len(t_ref["module"]["ref teacher image"]) == 1
    assert out.shape == (BATCH, CLASSES - ref.m)  # scored against the new-class half


# ------------------------------------------------------------------------------------------------- the report
def parse_table(out: str) -> Dict[str, Dict[str, float]]:
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], map(float, cells[1:])))
    return rows


@pytest.mark.parametrize("method", ["kdpl_coop", "promptkd"])
def test_printed_ratios_and_verdicts_come_from_the_measured_totals(method, single_thread, capsys):
    args, v = build(method)
    rows = sb.measure(list(v.values()), args, CPU)
    ratios = sb.report(args, CPU, rows)
    out = capsys.readouterr().out
    table = parse_table(out)
    assert set(table) == set(sb.VARIANTS)
    for name, row in table.items():
        assert row["total"] == pytest.approx(sum(row[p] for p in sb.PARTS), abs=0.03)  # printed to 0.01 ms
        assert row["total"] > 0
    assert table["ours"]["host"] == 0.0 and table["ours"]["teacher text"] == 0.0
    assert table["floor"]["teacher image"] == 0.0
    if method == "promptkd":
        assert table["reference"]["teacher text"] > 0 and table["ours"]["test step"] > 0
    else:
        assert table["reference"]["teacher text"] == 0.0 and table["reference"]["host"] > 0
    printed = {m.group(1): float(m.group(2)) for m in re.finditer(r"^ratio (\S+(?: \S+)?) = ([\d.]+)$", out, re.M)}
    assert set(printed) == set(ratios)
    for key, value in printed.items():
        if key.startswith("test "):
            a, b = key[5:].split("/")
            expected = table[a]["test step"] / table[b]["test step"]
        else:
            a, b = key.split("/")
            expected = table[a]["total"] / table[b]["total"]
        assert value == pytest.approx(expected, rel=0.02, abs=2e-3)
    verdicts = re.findall(r"^target .*: (\S+) = ([\d.]+) \((<=|>=) ([\d.]+)\) -> (met|NOT met)$", out, re.M)
    assert len(verdicts) == len(sb.TARGETS[method])
    for key, value, op, bound, verdict in verdicts:
        assert (verdict == "met") == sb.ratio_meets(ratios[key], op, float(bound))


def test_ratio_meets_and_unknown_comparison():
    assert sb.ratio_meets(0.5, "<=", 0.5) and not sb.ratio_meets(0.51, "<=", 0.5)
    assert sb.ratio_meets(3.0, ">=", 3.0) and not sb.ratio_meets(2.99, ">=", 3.0)
    with pytest.raises(ValueError, match="comparison"):
        sb.ratio_meets(1.0, "<", 1.0)


def test_unknown_variant_is_refused():
    with pytest.raises(SystemExit):
        sb.parse_args(["--variants", "ours,fastest"])


def test_targets_script_runs_both_methods_and_prints_every_verdict():
    """``benchmarks/targets.sh`` end to end, with tiny models in place of the real shapes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", KDPL_STUDENT="tiny-vit",
               KDPL_TEACHER="tiny-vit-wide", PROMPTKD_STUDENT="tiny-vit", PROMPTKD_TEACHER="tiny-vit-wide")
    done = subprocess.run(["bash", os.path.join(root, "benchmarks", "targets.sh"), "cpu", "1", "6", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kdpl_coop: student tiny-vit, teacher tiny-vit-wide, 6 classes, batch 2" in done.stdout
    assert "promptkd: student tiny-vit, teacher tiny-vit-wide, 6 classes, batch 2" in done.stdout
    verdicts = re.findall(r"^target .* -> (met|NOT met)$", done.stdout, re.M)
    assert len(verdicts) == len(sb.TARGETS["kdpl_coop"]) + len(sb.TARGETS["promptkd"])


def test_counted_attention_equals_sdpa_and_flops_are_counted_per_part(single_thread):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    bool_mask = torch.rand(5, 5) > 0.3
    bool_mask.fill_diagonal_(True)
    for kwargs in ({}, {"is_causal": True}, {"attn_mask": bool_mask}, {"attn_mask": torch.randn(5, 5)}):
        assert torch.allclose(sb.counted_attention(q, k, v, **kwargs), F.scaled_dot_product_attention(q, k, v, **kwargs),
                              atol=1e-5), kwargs
    counter = sb.FlopCounter(CPU)
    a, b = torch.randn(7, 11), torch.randn(11, 13)
    with counter.part("student fwd+bwd"):
        a @ b
    with counter.part("optimizer"):
        a + 1.0  # elementwise work is not counted
    assert counter.step == {"student fwd+bwd": 2 * 7 * 11 * 13, "optimizer": 0}


def test_flop_counts_show_the_work_each_variant_does(single_thread, monkeypatch):
    args, v = build("kdpl_coop")
    flops = sb.count_flops(list(v.values()), CPU)
    assert flops["reference"]["teacher text"] == 0 and flops["floor"]["teacher image"] == 0
    # the same teacher image tower, except that ours runs its last block for the class token alone
    visual = v["ours"].teacher.model.visual
    grid = v["ours"].teacher.preprocess.size // visual.conv1.kernel_size[0]
    x = torch.randn(BATCH, 1 + grid * grid, visual.conv1.out_channels)
    block = visual.transformer.resblocks[-1]
    monkeypatch.setattr(F, "scaled_dot_product_attention", sb.counted_attention)
    counts = []
    for run in (lambda: run_stock_block(block, x, None, False, True), lambda: run_stock_block_pooled(block, x, None)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            run()
        counts.append(counter.get_total_flops() / 1e9)
    assert 0 < counts[1] < counts[0] / 3
    assert flops["ours"]["teacher image"] == pytest.approx(flops["reference"]["teacher image"] - counts[0] + counts[1],
                                                           rel=1e-6)
    assert flops["cached"]["teacher image"] == 0
    # ours runs the class prompts cut after their EOT with the shared prefix once; CoOp's code all 77 tokens
    assert flops["ours"]["student fwd+bwd"] < 0.5 * flops["floor"]["student fwd+bwd"]
    assert all(row["total"] == pytest.approx(sum(row[p] for p in sb.PARTS)) for row in flops.values())


def test_cached_variants_remove_their_cache_folders(single_thread):
    import gc

    folders = []
    for method in ("kdpl_coop", "promptkd"):
        args = sb.parse_args(["--method", method, "--classes", str(CLASSES), "--batch", str(BATCH),
                              "--variants", "cached"])
        (variant,) = sb.build_variants(args, CPU, ["cached"])
        folders.append(variant.cache_dir)
        assert os.path.isdir(variant.cache_dir)
        del variant
    gc.collect()
    assert not any(os.path.exists(f) for f in folders), folders


def test_text_path_benchmark_prints_every_variant_and_its_ratios(single_thread, capsys):
    from benchmarks import text_path_benchmark as tp

    tp.main(["--model", "tiny-vit", "--classes", "6", "--batch", "2", "--warmup", "0", "--repeats", "1"])
    out = capsys.readouterr().out
    timings = dict(re.findall(r"^  (.+?)\s+([0-9.]+) ms$", out, flags=re.M))
    cut = int(re.search(r"cut (\d+) of 77 tokens", out).group(1))
    assert cut < 77
    for name in ("text fwd+bwd 77 tokens [module]", f"text fwd+bwd cut {cut} + shared prefix [sdpa]",
                 f"text fwd+bwd cut {cut} + shared prefix, whole last block [sdpa]",
                 "image fwd no_grad batch 2 [sdpa, whole last block]", "image fwd+bwd VPT batch 2 [sdpa]"):
        assert float(timings[name]) > 0, name
    assert len(timings) == 8 + 7 + 16  # text, image (with the package's own) and attention-only variants
    assert re.search(r"last block for the pooled token only: text .* [0-9.]+x; image fwd [0-9.]+x, VPT", out)
