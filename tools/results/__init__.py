"""Aggregate CoOp-family output trees into base/new/HM, cross-dataset, DG, few-shot and DFKD tables.

Usage (from the repository root)::

    python -m tools.results output                       # every protocol found under output/
    python -m tools.results output/base2new --protocol base2new --out-dir tables/
    python -m tools.results output --test-log            # parse_test_res.py's --test-log behaviour

Why this exists instead of Dassl's ``parse_test_res.py``: the reference parsers wait for ``Finished training``
while Dassl >= 0.6.1 prints ``Finish training`` (so they find nothing), they read one-decimal log lines, they
report no harmonic mean, and they cannot pair ``test_base``/``test_new`` runs (protocols.md §7-8).

Each run directory (``seedN`` or PromptKD's ``seed_N``) is read from ``results.json`` first (full precision,
information regime) and from its log second. Runs are grouped by the directory names (TAG, CFG, shots), never
by values inside files, so existing output trees of the reference repositories aggregate too. Layouts read
(protocols.md §6, kdpl.md §8):

* base-to-new: ``base2new/{train_base,test_base,test_new}/DATASET/shots_K/TAG/CFG/seedS``
* cross-dataset / DG: ``DATASET/TAG/CFG_Kshots/seedS`` (source) and ``evaluation/TAG/CFG_Kshots/DATASET/seedS``
* reference KDPL cross layout: ``cross_domain_and_datasets/{train,test}/DATASET/shots_K/TAG/CFG/seedS``
* few-shot: ``DATASET/TAG/CFG_Kshots/seedS`` (and CoOp's ``.../CFG_Kshots/nctx*_csc*_ctp*/seedS``)
* PromptKD per-target cross-dataset: ``DATASET/TAG/CFG_0shots/seedS``
* DFKD: ``dfkd/DATASET/TAG/CFG/seedS`` with per-domain accuracies in ``results.json`` (``domains``)

No silently wrong number (checks in ``tools/results/checks.py``). A table combines several values per seed; a seed
enters a group's means, std, HM and Average only when it has all of them ("complete seed"), and every other seed is
named in a warning with the path of each missing or unreadable run:

* base2new: a base accuracy (``test_base``, else the final test of ``train_base``) **and** ``test_new``;
* xd / dg: every target any seed of the group has, plus the ImageNet source when any seed has one;
* dfkd: every domain any seed of the group reports (a seed read from its log has no domains);
* fewshot: one run per cell, so nothing to pair; an Average over datasets measured on different seeds is warned.

``n`` is always the number of seeds (never targets or domains); with one seed no std is shown (``std`` empty in
CSV/JSON). A results.json that is invalid JSON, lacks a numeric 0-100 ``accuracy`` or has wrong types is named with
the reason; its run falls back to the one-decimal log value with a warning saying so, or, without a finished log, is
unreadable. A training run whose ``shots_used.min`` is below the shots asked is marked † and warned. Warnings go to

Modules: ``layout`` (seed-directory layouts, Run/Scan), ``parsing`` (results.json and logs, the tree scan),
``checks`` (what makes a value untrustworthy), ``stats`` (mean, std, HM), ``table`` (Table, per-seed indexing),
``writers`` (markdown cells, CSV/JSON/markdown files), ``registry`` (the one protocol table), ``protocols/`` (one
module per protocol, each registering itself: a new protocol is one new file there), ``build`` and ``cli``.
"""
from __future__ import annotations

from tools.results.build import ResultsNotFound, build_tables
from tools.results.checks import load_results_json
from tools.results.cli import main
from tools.results.layout import Run, Scan, classify, register_layout, unregister_layout
from tools.results.parsing import ACCURACY_RE, END_SIGNALS, RESULT_SIGNAL, log_files, parse_log, read_run, scan_tree
from tools.results.protocols.base2new import base2new_table
from tools.results.protocols.dfkd import dfkd_table
from tools.results.protocols.fewshot import fewshot_table
from tools.results.registry import BuildContext, Protocol, register, unregister
from tools.results.stats import Stat, harmonic_mean
from tools.results.table import Table, regime_text
from tools.results.transfer import transfer_table
from tools.results.writers import write_outputs

__all__ = ["ACCURACY_RE", "END_SIGNALS", "RESULT_SIGNAL", "BuildContext", "Protocol", "ResultsNotFound", "Run",
           "Scan", "Stat", "Table", "base2new_table", "build_tables", "classify", "dfkd_table", "fewshot_table",
           "harmonic_mean", "load_results_json", "log_files", "main", "parse_log", "read_run", "regime_text",
           "register", "register_layout", "scan_tree", "transfer_table", "unregister", "unregister_layout",
           "write_outputs"]
