"""Imported once by the sweep's forkserver (``tools/sweep_worker.py``): the slow imports every run shares.

Nothing here touches CUDA, so each forked run still chooses its GPUs with ``CUDA_VISIBLE_DEVICES``.
Without Dassl the imports are skipped; each run then reports the missing install itself.
"""
import sys

sys.modules.setdefault("outdated", None)  # type: ignore[arg-type]  (as train.main: no registry-probing thread)
try:
    import dassl  # noqa: F401
    import datasets  # noqa: F401
    import tools.build_teacher_cache  # noqa: F401
    import train  # noqa: F401
    import trainers  # noqa: F401
except ImportError:
    pass
