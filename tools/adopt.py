"""Adopt our trainers in a CoOp fork (KaiyangZhou/CoOp, MaPLe, PromptSRC, ...): one command, no hand edits.

    python -m tools.adopt FORK_DIR [--name kd] [--dry-run]

1. copies this repository's ``trainers/`` package into ``FORK_DIR/trainers/<name>/`` (a sub-package of the fork's
   own ``trainers``; an earlier copy is refreshed, files we no longer ship are removed);
2. inserts ``import trainers.<name>`` into the fork's ``train.py`` right after its last top-level trainer import, so
   it runs before ``main(args)`` builds the config (an import appended at the end of the file would run after
   training started);
3. copies our ``configs/trainers/<TRAINER>/`` folders into ``FORK_DIR/configs/trainers/``, where the fork's scripts
   look up ``configs/trainers/${TRAINER}/${CFG}.yaml``; the fork's own folders are never touched.

It prints a unified diff of train.py and what it copied. A second run changes nothing and says so. It refuses (exit
2, nothing written) when FORK_DIR has no train.py, no trainer import to anchor on, or a file or config folder of the
fork's own where ours would go. ``trainers/<name>/adopted.json`` records what was written (so a refresh can tell our
config folders from the fork's).

Our ``datasets/`` package is not copied: a fork registers the same dataset names (EuroSAT, ImageNet, ...) with the
same on-disk layouts and split files, and our trainers read whatever dataset class ``DATASET.NAME`` names.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MANIFEST = "adopted.json"
IGNORED = ("__pycache__", ".pytest_cache")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AdoptError(Exception):
    """The fork cannot be adopted as it is; the message says why and what to do."""


@dataclass
class Plan:
    """Everything one adoption would write; nothing is written until :func:`apply` runs."""

    fork: str
    name: str
    train_py: str
    train_old: str
    train_new: str
    files: Dict[str, bytes] = field(default_factory=dict)  # fork-relative path -> content, for every copied file
    trees: List[str] = field(default_factory=list)  # fork-relative folders that hold exactly ``files`` below them
    changed: List[str] = field(default_factory=list)  # the trees whose content differs from what is there
    removed: List[str] = field(default_factory=list)  # config folders an earlier adoption wrote that we no longer ship

    def diff(self) -> str:
        rel = osp.relpath(self.train_py, self.fork)
        return "".join(difflib.unified_diff(self.train_old.splitlines(True), self.train_new.splitlines(True),
                                            f"a/{rel}", f"b/{rel}"))


def read_tree(folder: str) -> Dict[str, bytes]:
    """Relative path -> bytes of every file below ``folder`` (caches skipped)."""
    out: Dict[str, bytes] = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED)
        for f in sorted(files):
            if f.endswith((".pyc", ".pyo")):
                continue
            path = osp.join(base, f)
            with open(path, "rb") as fh:
                out[osp.relpath(path, folder)] = fh.read()
    return out


def source_commit() -> str:
    """The commit this copy comes from (provenance only; empty outside a git checkout)."""
    try:
        done = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def our_trainer_configs() -> List[str]:
    """The trainer names that have a config folder here (configs/trainers/<TRAINER>/)."""
    root = osp.join(ROOT, "configs", "trainers")
    return sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))


def import_line(name: str) -> str:
    return f"import trainers.{name}  # KDPL_*, PromptKD*, DFKD_*, ZeroshotCLIP_KD (added by python -m tools.adopt)\n"


def _modules(node: ast.stmt) -> List[str]:
    """Absolute module names a top-level import statement imports (empty for any other statement)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return []


def insert_import(source: str, name: str, path: str = "train.py") -> str:
    """``source`` with ``import trainers.<name>`` right after its last top-level trainer import.

    Unchanged when that import is already there, before any top-level code runs; one that comes after such code (e.g.
    appended below ``if __name__ == "__main__": main(args)``, which runs first) is moved up.
    """
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise AdoptError(f"{path} does not parse ({exc}); fix it before adopting.") from exc
    ours = f"trainers.{name}"
    anchors, existing, first_code = [], [], None
    for node in tree.body:
        modules = _modules(node)
        if any(m == ours or m.startswith(ours + ".") for m in modules):
            existing.append(node)
        elif any(m == "trainers" or m.startswith("trainers.") for m in modules):
            anchors.append(node)
        elif first_code is None and not modules and not isinstance(
                node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)) \
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            first_code = node  # e.g. `if __name__ == "__main__":`: code that runs (and trains) on execution
    if existing and (first_code is None or existing[0].lineno < first_code.lineno):
        return source  # already adopted, in time
    if not anchors:
        raise AdoptError(
            f"{path} has no top-level trainer import (`import trainers.coop` or `from trainers... import ...`) to "
            f"place `import trainers.{name}` next to. Add that line yourself before the code that builds the config "
            "(an import after main(args) runs too late).")
    lines = source.splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    late = {i for node in existing for i in range(node.lineno - 1, node.end_lineno)}
    end = anchors[-1].end_lineno
    out = [line for i, line in enumerate(lines[:end]) if i not in late] + [import_line(name)]
    return "".join(out + [line for i, line in enumerate(lines[end:], start=end) if i not in late])


def read_manifest(folder: str) -> Optional[dict]:
    path = osp.join(folder, MANIFEST)
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise AdoptError(f"{path} is unreadable ({exc}); remove {folder} and rerun.") from exc


def plan(fork: str, name: str = "kd") -> Plan:
    """Check the fork and compute every file to write; raises :class:`AdoptError` before anything is written."""
    fork = osp.abspath(fork)
    if not NAME_RE.match(name):
        raise AdoptError(f"--name {name!r} is not a Python identifier; use e.g. kd.")
    if not osp.isdir(fork):
        raise AdoptError(f"{fork} is not a directory; pass the root of a CoOp fork checkout (the folder with "
                         "train.py).")
    train_py = osp.join(fork, "train.py")
    if not osp.isfile(train_py):
        raise AdoptError(f"{fork} has no train.py: pass the root of a CoOp fork checkout (the folder with train.py "
                         "and trainers/).")
    if osp.samefile(fork, ROOT):
        raise AdoptError(f"{fork} is this repository; pass a fork's checkout.")
    with open(train_py, encoding="utf-8") as f:
        old = f.read()
    new = insert_import(old, name, train_py)
    if not osp.isdir(osp.join(fork, "trainers")):
        raise AdoptError(f"{fork} has no trainers/ package although train.py imports from it.")

    target = osp.join("trainers", name)
    if osp.exists(osp.join(fork, "trainers", name + ".py")):
        raise AdoptError(f"{osp.join(fork, 'trainers', name + '.py')} is the fork's own module; choose another "
                         "--name.")
    previous = None
    if osp.exists(osp.join(fork, target)):
        previous = read_manifest(osp.join(fork, target))
        if previous is None:
            raise AdoptError(f"{osp.join(fork, target)} exists and was not written by tools.adopt (no {MANIFEST}); "
                             "choose another --name or remove that folder.")
    ours_before = set(previous.get("configs", [])) if previous else set()

    configs = our_trainer_configs()
    clash = [c for c in configs if osp.exists(osp.join(fork, "configs", "trainers", c)) and c not in ours_before]
    if clash:
        raise AdoptError(f"The fork already has config folders {clash} under {osp.join(fork, 'configs', 'trainers')} "
                         "(not written by tools.adopt); they would shadow ours. Move them away and rerun.")

    p = Plan(fork, name, train_py, old, new)
    package = read_tree(osp.join(ROOT, "trainers"))
    manifest = {"tool": "python -m tools.adopt", "source": ROOT, "commit": source_commit(), "name": name,
                "configs": configs}
    package[MANIFEST] = (json.dumps(manifest, indent=2) + "\n").encode()
    trees = {target: package}
    for c in configs:
        trees[osp.join("configs", "trainers", c)] = read_tree(osp.join(ROOT, "configs", "trainers", c))
    for tree, files in trees.items():
        p.trees.append(tree)
        p.files.update({osp.join(tree, rel): data for rel, data in files.items()})
        there = read_tree(osp.join(fork, tree)) if osp.isdir(osp.join(fork, tree)) else None
        if there != files:
            p.changed.append(tree)
    p.removed = [osp.join("configs", "trainers", c) for c in sorted(ours_before - set(configs))
                 if osp.isdir(osp.join(fork, "configs", "trainers", c))]
    return p


def apply(p: Plan) -> None:
    """Write the plan: changed trees are replaced whole (stale files go), then train.py."""
    for tree in p.removed:
        shutil.rmtree(osp.join(p.fork, tree))
    for tree in p.changed:
        dest = osp.join(p.fork, tree)
        if osp.isdir(dest):
            shutil.rmtree(dest)
        prefix = tree + os.sep
        for rel, data in p.files.items():
            if rel.startswith(prefix):
                path = osp.join(p.fork, rel)
                os.makedirs(osp.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
    if p.train_new != p.train_old:
        tmp = p.train_py + ".adopt.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(p.train_new)
        shutil.copymode(p.train_py, tmp)
        os.replace(tmp, p.train_py)


def report(p: Plan, dry_run: bool) -> str:
    """The train.py diff, then one line per kind of copied folder."""
    diff = p.diff()
    lines = [diff.rstrip("\n") if diff else f"train.py already imports trainers.{p.name}: unchanged"]
    written = "would be written" if dry_run else "written"
    for label, trees in (("trainers/", [t for t in p.trees if not t.startswith("configs")]),
                         ("configs/trainers/", [t for t in p.trees if t.startswith("configs")])):
        changed = [osp.basename(t) for t in trees if t in p.changed]
        same = [osp.basename(t) for t in trees if t not in p.changed]
        parts = ([f"{written}: {', '.join(changed)}"] if changed else []) + \
            ([f"up to date: {', '.join(same)}"] if same else [])
        lines.append(f"{label} {'; '.join(parts)}")
    if p.removed:
        lines.append(f"{'would remove' if dry_run else 'removed'} (no longer shipped): "
                     f"{', '.join(osp.basename(t) for t in p.removed)}")
    if not diff and not p.changed and not p.removed:
        lines.append(f"Nothing to do: {p.fork} already has this adoption.")
    else:
        lines.append(f"{'Dry run: nothing written. ' if dry_run else ''}Train with the fork's own train.py, e.g. "
                     "--trainer KDPL_CoOp --config-file configs/trainers/KDPL_CoOp/vit_b32_ctxv1.yaml (in the "
                     "fork's scripts: TRAINER=KDPL_CoOp CFG=vit_b32_ctxv1).")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.adopt", description=__doc__.split("\n")[0])
    parser.add_argument("fork", metavar="FORK_DIR", help="root of the CoOp fork checkout (holds train.py)")
    parser.add_argument("--name", default="kd", help="sub-package name: trainers/<name>/ (default kd)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    args = parser.parse_args(argv)
    try:
        p = plan(args.fork, args.name)
    except AdoptError as exc:
        print(f"tools.adopt: refused, nothing written: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        apply(p)
    print(report(p, args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
