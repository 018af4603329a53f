"""Distillation-based prompt learning for CLIP as Dassl trainers.

``import trainers`` registers every trainer into Dassl's ``TRAINER_REGISTRY``, adds each trainer's config keys to
Dassl's defaults (only where absent), and makes unmodified Dassl 0.6.3 work on current torch. Without Dassl, the
Dassl-free core (``trainers.core``) still imports; the trainers are simply not registered.
"""
from __future__ import annotations

import sys

# wilds/ogb (imported by dassl.data) start threads that probe the package registry; offline they only slow exit.
if "outdated" not in sys.modules:
    sys.modules["outdated"] = None  # type: ignore[assignment]

try:
    import dassl  # noqa: F401
except ImportError:  # the core stays usable
    DASSL_AVAILABLE = False
else:
    DASSL_AVAILABLE = True

if DASSL_AVAILABLE:
    # registration, config keys, Dassl fixes
    from . import dfkd, kdpl, promptkd, promptkd_teacher, zeroshot  # noqa: E402,F401
