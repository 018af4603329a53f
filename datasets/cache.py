"""Atomic cache files with a fallback location for read-only dataset folders, kept as data (no Dassl import).

CoOp writes ``$DATA/<folder>/split_fewshot/shot_K-seed_S.pkl`` in place, which fails on read-only mounts and can
leave a truncated pickle when two seeds race. Here every write goes to a temporary file in the target folder and
is renamed over the final name (``os.replace`` is atomic on POSIX), and when the dataset folder cannot be written
the file goes under a fallback root instead (cfg ``DATASET.FEWSHOT_CACHE_DIR``, env ``FEWSHOT_CACHE_DIR``, else
``<OUTPUT_DIR>/data_cache``), mirroring the ``$DATA`` layout so one fallback root serves every dataset.

Dataset folders are where downloaded prepared-dataset bundles put such files, so a cache is never trusted as code:
our caches are JSON (``shot_K-seed_S.json``: per split a list of ``{impath, label, domain, classname}``), preferred
when present; CoOp's existing pickles (``.pkl``) still load, through an unpickler that builds nothing but Dassl
``Datum`` records and plain containers, so a crafted pickle cannot run anything.
"""
from __future__ import annotations

import builtins
import io
import json
import logging
import os
import pickle
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .errors import DatasetError
from .items import Item
from .sampling import few_shot_splits

logger = logging.getLogger(__name__)

__all__ = ["FewShotCacheError", "UnsafePickleError", "FALLBACK_ENV", "JSON_FORMAT", "atomic_write_bytes",
           "fewshot_cache_name", "json_cache_name", "fallback_root", "cache_dirs", "find_cached", "write_cache",
           "check_cached_paths", "load_pickle", "load_cache", "encode_item_lists", "cached_few_shot"]

FALLBACK_ENV = "FEWSHOT_CACHE_DIR"
FEWSHOT_SUBDIR = "split_fewshot"
JSON_FORMAT = "datasets.cache item lists v1"  # the "format" field of our JSON caches


class FewShotCacheError(DatasetError):
    """A cached few-shot (or preprocessed) file cannot be used; the message names the file to delete."""


class UnsafePickleError(FewShotCacheError):
    """A cached pickle names something other than Dassl's Datum or a plain builtin; nothing of it was run."""


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


# ------------------------------------------------------------------------------------------------------------------
# Pickles (CoOp's caches): data only
# ------------------------------------------------------------------------------------------------------------------
class _DatumRecord:
    """What a pickled dassl ``Datum`` becomes here: its four attributes and nothing else.

    Pickle rebuilds a Datum without calling ``__init__`` (NEWOBJ, then BUILD with its ``__dict__``), so Dassl's
    file-existence assert never ran on load; stale paths are reported by :func:`check_cached_paths` instead.
    ``__init__`` only stores its arguments, so a REDUCE that calls ``Datum(...)`` stays harmless too.
    """

    __slots__ = ("_impath", "_label", "_domain", "_classname")

    def __init__(self, impath: Any = "", label: Any = 0, domain: Any = 0, classname: Any = ""):
        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a Datum's state must be a dict, got {type(state).__name__}")
        self.__init__(state.get("_impath", ""), state.get("_label", 0), state.get("_domain", 0),
                      state.get("_classname", ""))

    # the properties Dassl's Datum has, so code written for Datum reads a record the same way
    impath = property(lambda self: self._impath)
    label = property(lambda self: self._label)
    domain = property(lambda self: self._domain)
    classname = property(lambda self: self._classname)


# What Dassl's (and CoOp's) pickles name: Datum by its defining module (``Datum.__module__``) or its package, and
# builtins that protocol 2-5 pickles may reach through a global (sets, frozensets; Python 2 spelling included).
_DATUM_NAMES = {("dassl.data.datasets.base_dataset", "Datum"), ("dassl.data.datasets", "Datum")}
# (No bytes/bytearray: ``bytes(n)`` called from a pickle allocates n bytes.)
_SAFE_BUILTINS = {name: getattr(builtins, name)
                  for name in ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "bool", "complex")}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals are only :class:`_DatumRecord` and plain builtins: nothing else can be named,
    imported or called (extension codes resolve through ``find_class`` too; persistent ids are refused)."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _DATUM_NAMES:
            return _DatumRecord
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        raise UnsafePickleError(
            f"Refusing to load {self.path}: it asks for {module}.{name}, but a few-shot cache may only hold Dassl "
            "Datum records and plain builtins (lists, dicts, strings, numbers). Nothing in the file was run. If it "
            "came with a downloaded dataset bundle, treat the bundle as untrusted. Delete "
            f"{self.path}; it is re-created (the same subset, from the seed) on the next run.")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"Refusing to load {self.path}: it uses a persistent id, which a few-shot cache "
                                f"never does. Nothing in the file was run. Delete {self.path} and run again.")


def load_pickle(path: str) -> Any:
    """Unpickle ``path`` admitting only Dassl ``Datum`` (read back as a plain record) and plain builtins.

    A file naming anything else raises :class:`UnsafePickleError` before anything runs; a truncated or foreign
    file becomes a :class:`FewShotCacheError` that names the file to delete.
    """
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(io.BytesIO(f.read()), path).load()
    except FewShotCacheError:
        raise
    except Exception as e:  # untrusted bytes: any failure (EOF, bad opcode, TypeError in a REDUCE) means unusable
        raise FewShotCacheError(f"Cannot read the cached file {path} ({type(e).__name__}: {e}). "
                                f"Delete {path} and run again to rebuild it.") from e


# ------------------------------------------------------------------------------------------------------------------
# JSON (our caches)
# ------------------------------------------------------------------------------------------------------------------
def encode_item_lists(lists: Mapping[str, Sequence[Any]]) -> bytes:
    """Our cache format: ``{"format": JSON_FORMAT, "<split>": [{impath, label, domain, classname}, ...]}``.

    Items may be :class:`~datasets.items.Item`, Dassl ``Datum`` or anything with those four attributes; paths are
    stored as given (absolute, as CoOp's pickles hold them).
    """
    data: Dict[str, Any] = {"format": JSON_FORMAT}
    for key, items in lists.items():
        data[key] = [{"impath": it.impath, "label": int(it.label), "domain": int(it.domain),
                      "classname": str(it.classname)} for it in items]
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise FewShotCacheError(f"Cannot read the cached file {path} ({type(e).__name__}: {e}). "
                                f"Delete {path} and run again to rebuild it.") from e
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise FewShotCacheError(f"{path} is not a cache written by this project (no \"format\": "
                                f"\"{JSON_FORMAT}\"). Delete it and run again to rebuild it.")
    return data


def _to_item(entry: Any) -> Optional[Item]:
    """A JSON entry or an unpickled Datum record as an Item; None when it is neither."""
    if isinstance(entry, dict):
        impath, label = entry.get("impath"), entry.get("label")
        domain, classname = entry.get("domain", 0), entry.get("classname", "")
    elif isinstance(entry, _DatumRecord):
        impath, label, domain, classname = entry.impath, entry.label, entry.domain, entry.classname
    else:
        return None
    if not isinstance(impath, str) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in (label, domain)) or not isinstance(classname, str):
        return None
    return Item(impath, label, classname, domain)


def load_cache(path: str, keys: Sequence[str] = ("train",)) -> Dict[str, List[Item]]:
    """The item lists ``keys`` of a cache file: our JSON (``.json``) or a CoOp pickle (read by :func:`load_pickle`).

    Raises :class:`FewShotCacheError` (naming the file to delete) when a key is missing or an entry is not an item.
    """
    data = _read_json(path) if path.endswith(".json") else load_pickle(path)
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise FewShotCacheError(f"{path} is not a cache of this kind (expected the lists {list(keys)}). "
                                "Delete it and run again to rebuild it.")
    out: Dict[str, List[Item]] = {}
    for key in keys:
        values = data[key]
        items = [_to_item(v) for v in values] if isinstance(values, (list, tuple)) else [None]
        if any(it is None for it in items):
            raise FewShotCacheError(f"{path}: the list {key!r} holds something other than image items "
                                    "(impath, label, domain, classname). Delete it and run again to rebuild it.")
        out[key] = items
    return out


def fewshot_cache_name(num_shots: int, seed: int, tag: str = "") -> str:
    """CoOp's file name ``shot_{K}-seed_{S}.pkl`` (a ``tag``, e.g. source domains, is appended for DG sets only).

    We write :func:`json_cache_name` of it; the ``.pkl`` name is read when a CoOp user already has one.
    """
    return f"shot_{num_shots}-seed_{seed}" + (f"-{tag}" if tag else "") + ".pkl"


def json_cache_name(name: str) -> str:
    """The name of our JSON cache for CoOp's pickle name ``name`` (``x.pkl`` -> ``x.json``)."""
    return (name[:-len(".pkl")] if name.endswith(".pkl") else name) + ".json"


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
    """The cache file for CoOp's ``name``: our JSON in any of ``dirs`` first, else ``name`` itself, else None."""
    for candidate in dict.fromkeys((json_cache_name(name), name)):
        for d in dirs:
            path = os.path.join(d, candidate)
            if os.path.isfile(path):
                return path
    return None


def write_cache(lists: Mapping[str, Sequence[Any]], name: str, dirs: Sequence[str],
                what: str = "few-shot data") -> Optional[str]:
    """Write ``lists`` as our JSON (:func:`json_cache_name` of ``name``) atomically into the first writable folder
    of ``dirs``; returns the path or None.

    Falling back (or failing everywhere) is printed so that it appears in Dassl's log.txt; a failed write never
    stops training, it only means the subset is sampled again (same seed, same subset) next time.
    """
    data = encode_item_lists(lists)
    name = json_cache_name(name)
    errors = []
    for i, d in enumerate(dirs):
        path = os.path.join(d, name)
        try:
            atomic_write_bytes(path, data)
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
            f"(cached lists hold absolute paths: was the dataset folder moved?). Delete {cache_path} and run "
            "again to re-sample the subset from the seed.")


def cached_few_shot(train: Sequence[Item], val: Sequence[Item], num_shots: int, seed: int, dirs: Sequence[str],
                    tag: str = "", with_val: bool = True) -> Tuple[List[Item], List[Item]]:
    """Few-shot train (and val) lists, loaded from the cache file if present, else sampled and cached as JSON.

    The cache holds ``{"train": train_k, "val": val_k}`` (``{"train": ...}`` when ``with_val`` is False, as CoOp's
    ImageNet); a CoOp ``.pkl`` of Datum objects is read when no JSON exists. Returns ``(train_k, val_k)`` as items;
    ``val_k`` is ``val`` unchanged when not sampled.
    """
    name = fewshot_cache_name(num_shots, seed, tag)
    keys = ("train", "val") if with_val else ("train",)
    path = find_cached(name, dirs)
    if path is not None:
        print(f"Loading preprocessed few-shot data from {path}")
        data = load_cache(path, keys)
        train_k = data["train"]
        val_k = data["val"] if with_val else list(val)
        check_cached_paths(train_k + (val_k if with_val else []), path)
        return train_k, val_k
    if with_val:
        train_k, val_k = few_shot_splits(train, val, num_shots)
    else:
        train_k, _ = few_shot_splits(train, [], num_shots)
        val_k = list(val)
    write_cache({"train": train_k, "val": val_k} if with_val else {"train": train_k}, name, dirs)
    return train_k, val_k
