"""Config keys: each trainer module declares its own with :func:`config_keys`; nothing here knows them all.

Keys are only added where absent, so a CoOp fork's own ``TRAINER.COOP`` (etc.) node is never overwritten.
No Dassl import: the hooks work on any yacs ``CfgNode``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from yacs.config import CfgNode as CN

ConfigHook = Callable[[CN], None]
_HOOKS: List[ConfigHook] = []
_ATTACHED: List[CN] = []


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
