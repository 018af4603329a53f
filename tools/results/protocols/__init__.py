"""One module per protocol, each registering itself in :mod:`tools.results.registry`.

Every module here is imported (in name order; the build order is each protocol's ``order``), so adding a protocol
is adding one file: a ``@register(name, order=..., layout=...)`` table builder, plus
:func:`tools.results.layout.register_layout` if its runs sit in a layout of their own.
"""
from __future__ import annotations

import importlib
import pkgutil

for _module in sorted(info.name for info in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        importlib.import_module(f"{__name__}.{_module}")
