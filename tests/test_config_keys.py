"""Every config key we declare is read somewhere: a key only declared misleads whoever sets it in a yaml.

"Read" means the key's name occurs at a read site in trainers/, tools/, datasets/ or train.py: attribute access
(``node.KEY``, not an assignment), item access (``node["KEY"]``), ``node.get("KEY", ...)``, ``cfg_get(node, "KEY",
...)``, or the last part of a dotted path given to ``cfg_value`` / ``cfg_node``, in a module that refers to the key's
node (see :func:`unread_keys`).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterable, Set

import pytest
from yacs.config import CfgNode as CN

pytest.importorskip("dassl", reason="Dassl.pytorch is not installed (install it from source, see README): "
                    "importing the trainers, which declare the keys, needs it")

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["trainers", "tools", "datasets", "train.py"]
PATH_READERS = {"cfg_value", "cfg_node"}


def _sources() -> Iterable[Path]:
    for entry in SCANNED:
        path = ROOT / entry
        yield from ([path] if path.is_file() else sorted(path.rglob("*.py")))


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def read_names(source: str) -> Set[str]:
    """Names read as config keys in one module's source (see the module docstring for what counts)."""
    names: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            names.add(node.slice.value)
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            strings = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if name in ("get", "cfg_get") and strings:
                names.add(strings[0])
            elif name in PATH_READERS:
                names.update(s.rpartition(".")[2] for s in strings)
    return names


def mentioned_nodes(source: str) -> Set[str]:
    """Node names a module refers to: attribute names and the parts of dotted strings ("TRAINER.KDPL")."""
    parts: Set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute):
            parts.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            parts.update(node.value.split("."))
    return parts


def class_strings(source: str) -> Dict[str, Set[str]]:
    """Class attributes set to a string (``precision_node = "COOP"``): name -> values."""
    out: Dict[str, Set[str]] = {}
    for cls in (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef)):
        for stmt in cls.body:
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        out.setdefault(target.id, set()).add(stmt.value.value)
    return out


def unread_keys(declared: Dict[str, Dict[str, object]], sources: Iterable[str]) -> Set[str]:
    """Dotted keys of ``declared`` (node path -> key -> default) that no source reads.

    Key K of node P is read when a module reads the name K and refers to P's last part: by name ("TRAINER.KDPL",
    ``cfg.TRAINER.KDPL``) or through a class attribute that some class sets to it (base.py reads
    ``self.precision_node``'s PREC; ``KDPL_CoOp.precision_node = "COOP"``). So a name read for one node does not
    count for another node that declares the same name.
    """
    sources = list(sources)
    assigned: Dict[str, Set[str]] = {}
    for source in sources:
        for name, values in class_strings(source).items():
            assigned.setdefault(name, set()).update(values)
    reach = []
    for source in sources:
        parts = mentioned_nodes(source)
        parts |= {value for name in parts & set(assigned) for value in assigned[name]}
        reach.append((read_names(source), parts))
    return {f"{path}.{key}" for path, keys in declared.items() for key in keys
            if not any(key in names and path.rpartition(".")[2] in parts for names, parts in reach)}


def declared_keys() -> Dict[str, Dict[str, object]]:
    """Every key the trainer modules declare, as recorded by ``add_keys`` once all hooks ran."""
    import trainers  # noqa: F401  (registers every module's hook)
    from trainers.config import DECLARED, extend_cfg

    extend_cfg(CN())
    return {path: dict(keys) for path, keys in DECLARED.items()}


def test_every_declared_key_is_read() -> None:
    declared = declared_keys()
    assert "TRAINER.KDPL" in declared and "TEACHER" in declared["TRAINER.KDPL"], declared.keys()
    unread = unread_keys(declared, (p.read_text() for p in _sources()))
    assert not unread, (f"Config keys declared but never read: {sorted(unread)}. Read each where it matters "
                        "(cfg_node/cfg_value) or remove it from its add_keys declaration and from the yamls.")


def test_a_key_only_declared_is_reported() -> None:
    """The scan is not vacuous: a planted key that is declared (dict literal, as add_keys gets), printed and written
    but never read fails; each kind of read site makes it read; a read for another node does not."""
    declared = {"TRAINER.PLANTED": {"NEVER_READ_KEY": 1}}
    declaration = 'add_keys(cfg, "TRAINER.PLANTED", {"NEVER_READ_KEY": 1})\nprint("NEVER_READ_KEY")\n' \
                  'cfg.TRAINER.PLANTED.NEVER_READ_KEY = 2\n'
    assert unread_keys(declared, [declaration]) == {"TRAINER.PLANTED.NEVER_READ_KEY"}
    node = 'node = cfg_node(cfg, "TRAINER.PLANTED")\n'
    for read in (node + 'x = node.NEVER_READ_KEY', node + 'x = node["NEVER_READ_KEY"]',
                 node + 'x = node.get("NEVER_READ_KEY", 0)', node + 'x = cfg_get(node, "NEVER_READ_KEY", 0)',
                 'x = cfg_value(cfg, "TRAINER.PLANTED.NEVER_READ_KEY")', 'x = cfg.TRAINER.PLANTED.NEVER_READ_KEY'):
        assert unread_keys(declared, [declaration, read]) == set(), read
    other = 'x = cfg_node(cfg, "TRAINER.OTHER").NEVER_READ_KEY'
    assert unread_keys(declared, [declaration, other]) == {"TRAINER.PLANTED.NEVER_READ_KEY"}
    dynamic = ['class T:\n    host_node = "PLANTED"\n',
               'x = cfg_node(cfg, f"TRAINER.{self.host_node}").NEVER_READ_KEY']
    assert unread_keys(declared, [declaration, *dynamic]) == set()


def test_scan_covers_the_real_declarations() -> None:
    """Guard against a scan that reads nothing: known keys are found read, in the files that read them."""
    read = set().union(*(read_names(p.read_text()) for p in _sources()))
    assert {"TEACHER", "K_MAX", "TEMPLATES_FILE", "KEEP_CHECKPOINTS"} <= read


def test_every_registered_trainer_is_a_class_statement_in_its_module():
    """`grep "class DFKD_Mix"` must find the trainer: no trainer is made with type()."""
    import inspect

    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: the trainers are not registered")
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    ours = {name: cls for name, cls in TRAINER_REGISTRY._obj_map.items() if cls.__module__.startswith("trainers.")}
    assert {"KDPL_CoOp", "PromptKD", "DFKD_Mix", "DFKD_Contrastive", "ZeroshotCLIP_KD"} <= set(ours)
    for name, cls in ours.items():
        source = inspect.getsource(cls)  # found by its `class NAME` statement; OSError for a type()-made class
        assert re.search(rf"^class {name}\(", source, re.M), name


def test_trainers_are_at_most_three_classes_deep_and_name_their_loss_in_their_own_file():
    """No mixins: each of our trainer classes has one base, at most three of ours deep (trainer, method base,
    PromptDistillTrainer); the loss a trainer trains with is written in its own module (or it does not train)."""
    pytest.importorskip("dassl", reason="Dassl.pytorch is not installed: the trainers are not registered")
    import trainers  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY
    from trainers.base import PromptDistillTrainer

    ours = {name: cls for name, cls in TRAINER_REGISTRY._obj_map.items() if cls.__module__.startswith("trainers.")}
    for name, cls in ours.items():
        chain = [c for c in cls.__mro__ if c.__module__.startswith("trainers.")]
        assert len(chain) <= 3 and chain[-1] is PromptDistillTrainer, (name, chain)
        assert all(len(c.__bases__) == 1 for c in chain), [(c.__name__, c.__bases__) for c in chain]
        assert not any("Mixin" in c.__name__ for c in cls.__mro__), (name, cls.__mro__)
        owner = next(c for c in chain if "compute_loss" in vars(c))
        if owner is not PromptDistillTrainer:
            assert owner.__module__ == cls.__module__, (name, owner)
        else:
            assert name == "ZeroshotCLIP_KD"  # zero-shot: never trains


def test_no_per_batch_state_is_left_on_a_trainer():
    """The batch reaches the loss as an argument (TrainBatch) and test metrics read the batch itself: the per-batch
    methods of every trainer module assign no attribute of ``self``."""
    import ast

    per_batch = {"parse_batch_train", "parse_batch_test", "forward_backward", "compute_loss", "model_inference",
                 "after_test_batch", "teacher_targets", "teacher_logits"}
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "trainers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in per_batch:
                for inner in ast.walk(node):
                    targets = inner.targets if isinstance(inner, ast.Assign) else \
                        [inner.target] if isinstance(inner, (ast.AnnAssign, ast.AugAssign)) else []
                    found += [f"{path.name}:{inner.lineno} {node.name} sets self.{t.attr}" for t in targets
                              if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"]
    assert not found, found


def test_dfkd_configs_are_one_file_per_setting():
    """The four DFKD_* trainers differ only in their prompt mode (a class attribute): their config folders link to
    one yaml per setting, which therefore cannot drift apart; tools.adopt copies the files' contents."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    shared = {p.resolve() for p in (configs / "dfkd").glob("*.yaml")}
    assert {p.name for p in shared} == {"tiny_cpu.yaml", "vit_b32.yaml"}
    for mode in ("Contrastive", "Handcrafted", "Mix", "Random"):
        links = sorted((configs / "trainers" / f"DFKD_{mode}").glob("*.yaml"))
        assert [p.name for p in links] == ["tiny_cpu.yaml", "vit_b32.yaml"]
        assert all(p.is_symlink() and p.resolve() in shared for p in links), links
        assert not any("PROMPT_MODE" in p.read_text() for p in links)
