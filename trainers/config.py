"""Config keys: each trainer module declares its own with :func:`config_keys`; nothing here knows them all.

Keys are only added where absent, so a CoOp fork's own ``TRAINER.COOP`` (etc.) node is never overwritten. The other
way round, a fork's ``extend_cfg`` runs after our import and *replaces* its nodes (``cfg.TRAINER.PROMPTSRC = CN()``
plus its own keys), dropping any key we added there. So every key is read through :func:`cfg_node` /
:func:`cfg_value`, which fall back on the default declared with :func:`add_keys`, and keys a fork does not have live
in nodes of our own (``TRAINER.KDPL``, ``TRAINER.SCL``, ...), which no fork replaces and which the fork's command
line and yamls can therefore set. No Dassl import: the hooks work on any yacs ``CfgNode``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping

from yacs.config import CfgNode as CN

ConfigHook = Callable[[CN], None]
_HOOKS: List[ConfigHook] = []
_ATTACHED: List[CN] = []
#: node path -> key -> default, as declared by :func:`add_keys` (the first declaration of a key wins)
DECLARED: Dict[str, Dict[str, Any]] = {}


def config_keys(hook: ConfigHook) -> ConfigHook:
    """Decorator: register a function that adds a module's keys to a config (and to every attached default)."""
    if hook not in _HOOKS:
        _HOOKS.append(hook)
        for cfg in _ATTACHED:
            hook(cfg)
    return hook


def attach_defaults(cfg: CN) -> None:
    """Keep ``cfg`` (Dassl's default config) extended with every hook, present and future.

    A CoOp fork's own train.py clones Dassl's defaults, so importing one trainer module is enough to get its keys.
    """
    if all(cfg is not c for c in _ATTACHED):
        _ATTACHED.append(cfg)
        extend_cfg(cfg)


def add_keys(cfg: CN, path: str, defaults: Dict[str, Any]) -> CN:
    """Create node ``path`` (e.g. "TRAINER.KDPL") if missing and add each missing key with its default."""
    declared = DECLARED.setdefault(path, {})
    for key, value in defaults.items():
        declared.setdefault(key, value)
    node = cfg
    for part in path.split("."):
        if part not in node:
            was_frozen = node.is_frozen()
            node.defrost()
            node[part] = CN()
            if was_frozen:
                node.freeze()
        node = node[part]
    for key, value in defaults.items():
        if key not in node:
            node[key] = CN(value) if isinstance(value, dict) else value
    return node


def extend_cfg(cfg: CN) -> CN:
    """Apply every registered hook (idempotent)."""
    for hook in _HOOKS:
        hook(cfg)
    return cfg


def cfg_get(node: CN, key: str, default: Any) -> Any:
    """Read a key that a fork's config may lack."""
    return node[key] if key in node else default


class NodeView(Mapping):
    """Read-only view of config node ``path``: a key the node lacks (a fork's ``extend_cfg`` replaced the node, or
    never had it) reads as its declared default. Attribute and item access, ``in``, ``get`` as on a ``CfgNode``."""

    def __init__(self, node: Mapping, path: str):
        self.__dict__["_node"], self.__dict__["_path"] = node, path

    def __getitem__(self, key: str) -> Any:
        if key in self._node:
            return self._node[key]
        declared = DECLARED.get(self._path, {})
        if key in declared:
            return declared[key]
        raise KeyError(f"Config key {self._path}.{key} is missing and has no declared default.")

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._path} is read-only here; set {self._path}.{key} in the config.")

    def __iter__(self) -> Iterator[str]:
        declared = DECLARED.get(self._path, {})
        return iter(list(self._node) + [k for k in declared if k not in self._node])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"NodeView({self._path}: {dict(self)})"


def cfg_node(cfg: Mapping, path: str) -> NodeView:
    """Node ``path`` (e.g. "TRAINER.PROMPTSRC") of ``cfg`` with declared defaults for missing keys (or nodes)."""
    node: Mapping = cfg
    for part in path.split("."):
        node = node[part] if isinstance(node, Mapping) and part in node else {}
    return NodeView(node, path)


def cfg_value(cfg: Mapping, key: str) -> Any:
    """One key by dotted path (e.g. "TRAINER.SCL.TEMPLATES_FILE"), its declared default when the config lacks it."""
    path, _, name = key.rpartition(".")
    return cfg_node(cfg, path)[name]
