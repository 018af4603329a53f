"""Crash-safe checkpoint files and the state an exact resume needs (no Dassl import).

Why: a run killed at any instant (SIGKILL, OOM, preemption) must leave nothing that blocks its rerun, and the rerun
must continue exactly where the newest good checkpoint left off, random states included, so that a killed and
resumed run ends bit-identical (on CPU) to an uninterrupted one.

- Every file is written to a temporary file in its folder, flushed, fsynced and renamed over the final name
  (:func:`atomic_write`): readers see the old file or the complete new one, never a truncated one.
- :func:`newest_loadable` picks the newest ``model.pth.tar-N`` that loads in every model folder and reports each
  damaged file it skipped; :func:`prune_checkpoints` keeps only the newest few.
- :func:`capture_rng_state` / :func:`restore_rng_state` cover Python's ``random``, NumPy's legacy global generator,
  torch's CPU generator and the CUDA generators, stored as tensors and plain numbers so that the checkpoint still loads
  with ``torch.load(weights_only=True)``. The DataLoader's order and its workers' seeds are drawn from torch's global
  generator when an epoch's iterator is created, so restoring it restores the data order and augmentations too.
"""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import uuid
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

CHECKPOINT_PREFIX = "model.pth.tar-"
POINTER_FILE = "checkpoint"  # Dassl's text file naming the newest checkpoint of a model folder
_EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
_TEMP_FILE = re.compile(r"^\..+\.\d+\.[0-9a-f]{8}\.tmp$")
_EPOCH_TIMING = re.compile(r"^epoch\d+_s$")


# --------------------------------------------------------------------------------------------------- atomic files
def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX); silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, flush, fsync, and rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:  # created with the umask's permissions, as a plain open() would
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)
    return path


def atomic_write_text(path: str, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path: str, record: Any) -> str:
    return atomic_write_text(path, json.dumps(record, indent=2))


def atomic_torch_save(obj: Any, path: str) -> str:
    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temp_files(folder: str) -> List[str]:
    """Delete the temporary files an interrupted :func:`atomic_write` left in ``folder``; returns their paths."""
    removed = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if _TEMP_FILE.match(name):
                os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


# ---------------------------------------------------------------------------------------- checkpoint folders
def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(epoch)}"


def checkpoint_epochs(folder: str) -> List[int]:
    """Epochs of the ``model.pth.tar-N`` files in ``folder``, newest first (none for a missing folder)."""
    if not os.path.isdir(folder):
        return []
    epochs = (_EPOCH_FILE.match(name) for name in os.listdir(folder))
    return sorted((int(m.group(1)) for m in epochs if m), reverse=True)


def read_pointer(folder: str) -> Optional[str]:
    """The file name Dassl's pointer file names, or None when it is missing or empty."""
    try:
        with open(os.path.join(folder, POINTER_FILE)) as f:
            name = f.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name or None


def write_pointer(folder: str, name: str) -> str:
    return atomic_write_text(os.path.join(folder, POINTER_FILE), f"{name}\n")


def prune_checkpoints(folder: str, newest: int, keep: int) -> List[str]:
    """Delete ``model.pth.tar-N`` files older than ``newest`` beyond the ``keep`` newest (``newest`` included);
    files of later epochs and ``model-best.pth.tar`` are never touched. ``keep`` <= 0 keeps everything."""
    if keep <= 0:
        return []
    older = [e for e in checkpoint_epochs(folder) if e < newest]
    removed = []
    for epoch in older[keep - 1:]:
        path = os.path.join(folder, checkpoint_name(epoch))
        os.unlink(path)
        removed.append(path)
    return removed


def _is_checkpoint(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict) and isinstance(ckpt.get("epoch"), int)


def newest_loadable(folders: Dict[str, str], load: Callable[[str], Any]
                    ) -> Tuple[Optional[int], Dict[str, Dict[str, Any]], List[str]]:
    """The newest epoch whose checkpoint loads in every folder (name -> folder), those checkpoints, and one warning per
    damaged or missing file passed over on the way (truncated, not a checkpoint, refused by ``load``).

    Returns ``(None, {}, warnings)`` when no epoch loads everywhere."""
    warnings: List[str] = []
    bad = set()
    epochs = sorted({e for folder in folders.values() for e in checkpoint_epochs(folder)}, reverse=True)
    for epoch in epochs:
        loaded: Dict[str, Dict[str, Any]] = {}
        for name, folder in folders.items():
            path = os.path.join(folder, checkpoint_name(epoch))
            if path in bad:
                break
            if not os.path.isfile(path):
                warnings.append(f"{path} is missing (the other models have epoch {epoch})")
                bad.add(path)
                break
            try:
                ckpt = load(path)
            except Exception as exc:  # a truncated zip, a foreign pickle, ...: skip it, say why
                warnings.append(f"{path} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]})")
                bad.add(path)
                break
            if not _is_checkpoint(ckpt) or ckpt["epoch"] != epoch:
                what = "no 'state_dict' and 'epoch'" if not _is_checkpoint(ckpt) else f"it holds epoch {ckpt['epoch']}"
                warnings.append(f"{path} is not the checkpoint of epoch {epoch} ({what})")
                bad.add(path)
                break
            loaded[name] = ckpt
        else:
            return epoch, loaded, warnings
    return None, {}, warnings


# ----------------------------------------------------------------------------------------------- random states
def capture_rng_state(cuda: bool = False) -> Dict[str, Any]:
    """Python, NumPy, torch CPU (and, with ``cuda``, every CUDA device's) generator states, as tensors and plain
    numbers (``torch.load(weights_only=True)`` reads them back)."""
    version, py_state, gauss_next = random.getstate()
    _, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    return {
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"key": torch.from_numpy(np.asarray(np_key, dtype=np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [s.cpu() for s in torch.cuda.get_rng_state_all()] if cuda else [],
    }


def restore_rng_state(state: Dict[str, Any], cuda: bool = False) -> List[str]:
    """Set the generators back to ``state`` (from :func:`capture_rng_state`); returns what could not be restored."""
    problems = []
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss_next"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].cpu().numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    saved = list(state.get("cuda") or [])
    if cuda:
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved])
        else:
            problems.append(f"CUDA generators not restored: saved for {len(saved)} devices, "
                            f"{torch.cuda.device_count()} visible")
    return problems


# ----------------------------------------------------------------------------------------------------- timings
def merge_timings(prior: Dict[str, float], current: Dict[str, float]) -> Dict[str, float]:
    """A run's timings over all its processes: an ``epochN_s`` entry comes from the process that ran the epoch (the
    later one if both did, e.g. after falling back to an older checkpoint); every other entry adds up."""
    merged = dict(prior)
    for key, value in current.items():
        merged[key] = value if _EPOCH_TIMING.match(key) else merged.get(key, 0.0) + value
    return merged


def load_checkpoint_file(path: str, device: torch.device) -> Dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` and an error that says what to do when that is refused."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RuntimeError(
            f"{path} contains Python objects that weights_only loading refuses (it was probably saved by unpatched "
            f"Dassl). If you trust the file, set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 and retry. ({exc})"
        ) from exc
