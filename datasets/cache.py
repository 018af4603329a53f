"""Atomic cache files with a fallback location for read-only dataset folders (no Dassl import).

CoOp writes ``$DATA/<folder>/split_fewshot/shot_K-seed_S.pkl`` in place, which fails on read-only mounts and can
leave a truncated pickle when two seeds race. Here every write goes to a temporary file in the target folder and
is renamed over the final name (``os.replace`` is atomic on POSIX), and when the dataset folder cannot be written
the file goes under a fallback root instead (cfg ``DATASET.FEWSHOT_CACHE_DIR``, env ``FEWSHOT_CACHE_DIR``, else
``<OUTPUT_DIR>/data_cache``), mirroring the ``$DATA`` layout so one fallback root serves every dataset.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

from .core import DatasetError
from .sampling import few_shot_splits

logger = logging.getLogger(__name__)

__all__ = ["FewShotCacheError", "FALLBACK_ENV", "atomic_write_bytes", "atomic_pickle_dump", "fewshot_cache_name",
           "fallback_root", "cache_dirs", "find_cached", "write_cache", "check_cached_paths", "load_pickle",
           "cached_few_shot"]

FALLBACK_ENV = "FEWSHOT_CACHE_DIR"
FEWSHOT_SUBDIR = "split_fewshot"


class FewShotCacheError(DatasetError):
    """A cached few-shot (or preprocessed) pickle cannot be used; the message names the file to delete."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write; concurrent writers of the same
    content (several seeds sampling the same subset) are harmless. Raises OSError if the folder is not writable.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; caches in a shared $DATA must stay readable
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_pickle_dump(obj: Any, path: str) -> None:
    """Pickle ``obj`` (highest protocol, as CoOp) to ``path`` atomically."""
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def load_pickle(path: str) -> Any:
    """Unpickle ``path``; a truncated or foreign file becomes an error that names the file to delete."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError) as e:
        raise FewShotCacheError(f"Cannot read the cached file {path} ({type(e).__name__}: {e}). "
                                f"Delete {path} and run again to rebuild it.") from e


def fewshot_cache_name(num_shots: int, seed: int, tag: str = "") -> str:
    """CoOp's file name ``shot_{K}-seed_{S}.pkl`` (a ``tag``, e.g. source domains, is appended for DG sets only)."""
    return f"shot_{num_shots}-seed_{seed}" + (f"-{tag}" if tag else "") + ".pkl"


def fallback_root(cfg_value: str = "", output_dir: str = "") -> Optional[str]:
    """The fallback cache root: cfg DATASET.FEWSHOT_CACHE_DIR, else $FEWSHOT_CACHE_DIR, else <OUTPUT_DIR>/data_cache."""
    for cand in (cfg_value, os.environ.get(FALLBACK_ENV, "")):
        if cand:
            return os.path.abspath(os.path.expanduser(cand))
    if output_dir:
        return os.path.join(os.path.abspath(os.path.expanduser(output_dir)), "data_cache")
    return None


def cache_dirs(dataset_dir: str, fallback: Optional[str], subdir: str = FEWSHOT_SUBDIR) -> List[str]:
    """Folders to look in / write to, in order: ``<dataset_dir>/<subdir>``, then ``<fallback>/<folder>/<subdir>``."""
    dirs = [os.path.join(dataset_dir, subdir) if subdir else dataset_dir]
    if fallback:
        folder = os.path.basename(os.path.normpath(dataset_dir))
        dirs.append(os.path.join(fallback, folder, subdir) if subdir else os.path.join(fallback, folder))
    return dirs


def find_cached(name: str, dirs: Sequence[str]) -> Optional[str]:
    """The first existing ``<dir>/<name>``, or None."""
    for d in dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    return None


def write_cache(obj: Any, name: str, dirs: Sequence[str], what: str = "few-shot data") -> Optional[str]:
    """Pickle ``obj`` atomically into the first writable folder of ``dirs``; returns the path or None.

    Falling back (or failing everywhere) is printed so that it appears in Dassl's log.txt; a failed write never
    stops training, it only means the subset is sampled again (same seed, same subset) next time.
    """
    errors = []
    for i, d in enumerate(dirs):
        path = os.path.join(d, name)
        try:
            atomic_pickle_dump(obj, path)
        except OSError as e:
            errors.append(f"{d}: {e.strerror or e}")
            continue
        if i == 0:
            print(f"Saving preprocessed {what} to {path}")
        else:
            print(f"Cannot write to {dirs[0]} ({'; '.join(errors)}); saved preprocessed {what} to fallback {path}")
        return path
    hint = "" if len(dirs) > 1 else f" Set DATASET.FEWSHOT_CACHE_DIR or ${FALLBACK_ENV} to a writable folder."
    print(f"WARNING: could not save {what} ({'; '.join(errors)}); it is recomputed next time.{hint}")
    logger.warning("could not save %s: %s", what, errors)
    return None


def check_cached_paths(items: Iterable, cache_path: str) -> None:
    """Fail clearly when a cached pickle points to images that no longer exist (e.g. $DATA was moved)."""
    missing = [it.impath for it in items if not os.path.isfile(it.impath)]
    if missing:
        raise FewShotCacheError(
            f"The cached file {cache_path} lists {len(missing)} image(s) that do not exist, e.g. {missing[0]} "
            f"(cached pickles hold absolute paths: was the dataset folder moved?). Delete {cache_path} and run "
            "again to re-sample the subset from the seed.")


def cached_few_shot(train: Sequence, val: Sequence, num_shots: int, seed: int, dirs: Sequence[str], tag: str = "",
                    with_val: bool = True, encode: Callable[[list], list] = list,
                    decode: Callable[[list], list] = list) -> Tuple[list, list]:
    """Few-shot train (and val) lists, loaded from the CoOp cache file if present, else sampled and cached.

    The cache holds ``{"train": encode(train_k), "val": encode(val_k)}`` (``{"train": ...}`` when ``with_val`` is
    False, as CoOp's ImageNet); the Dassl layer passes encoders to/from ``dassl`` ``Datum`` so the pickles are
    byte-compatible with CoOp's. Returns ``(train_k, val_k)``; ``val_k`` is ``val`` unchanged when not sampled.
    """
    name = fewshot_cache_name(num_shots, seed, tag)
    path = find_cached(name, dirs)
    if path is not None:
        print(f"Loading preprocessed few-shot data from {path}")
        data = load_pickle(path)
        if not isinstance(data, dict) or "train" not in data or (with_val and "val" not in data):
            raise FewShotCacheError(f"{path} is not a few-shot cache of this kind (expected keys "
                                    f"{['train', 'val'] if with_val else ['train']}). Delete it and run again.")
        train_k = decode(data["train"])
        val_k = decode(data["val"]) if with_val else list(val)
        check_cached_paths(list(train_k) + (list(val_k) if with_val else []), path)
        return train_k, val_k
    if with_val:
        train_k, val_k = few_shot_splits(train, val, num_shots)
        data = {"train": encode(train_k), "val": encode(val_k)}
    else:
        train_k, _ = few_shot_splits(train, [], num_shots)
        val_k = list(val)
        data = {"train": encode(train_k)}
    write_cache(data, name, dirs)
    return train_k, val_k
