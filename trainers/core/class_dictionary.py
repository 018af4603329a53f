"""The KDPL authors' class-name dictionary for class-agnostic distillation (KDPL-CA).

The file is the authors' published ``src/classnames_dictionay.csv`` (sic) of miccunifi/KDPL (one column, header
``ClassName``, 20,930 names). It is not bundled: it is read from a configured path, or downloaded once from the
pinned commit into a cache folder and checked against its SHA-256.
"""
from __future__ import annotations

import csv
import hashlib
import os
import urllib.error
import urllib.request
from typing import List, Tuple

DICTIONARY_URL = ("https://raw.githubusercontent.com/miccunifi/KDPL/main/src/classnames_dictionay.csv")
DICTIONARY_SHA256 = "286bc637c886dea1daf9083b1ab07ca5e8ffcb8e96209d41e5ed1d21d8047063"
DICTIONARY_SIZE = 20930
CACHE_DIR = os.environ.get("KDPL_CACHE", os.path.expanduser("~/.cache/kdpl"))


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_class_dictionary(path: str) -> List[str]:
    """Names from a one-column CSV with header ``ClassName`` (or a plain one-name-per-line file), order kept."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Class dictionary {path!r} does not exist (TRAINER.KDPL.CA_DICTIONARY).")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and rows[0][0].strip() == "ClassName":
        rows = rows[1:]
    names = [r[0].strip() for r in rows if r[0].strip()]
    if not names:
        raise ValueError(f"Class dictionary {path!r} holds no names.")
    return names


def download_class_dictionary(cache_dir: str = CACHE_DIR) -> str:
    """Fetch the authors' dictionary once (pinned commit, checksum verified); clear error offline."""
    target = os.path.join(cache_dir, "classnames_dictionary.csv")
    if os.path.isfile(target) and sha256_of(target) == DICTIONARY_SHA256:
        return target
    os.makedirs(cache_dir, exist_ok=True)
    tmp = target + ".part"
    try:
        urllib.request.urlretrieve(DICTIONARY_URL, tmp)
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(
            f"The KDPL class dictionary is not cached at {target} and could not be downloaded from {DICTIONARY_URL} "
            f"({exc}). Download it by hand and set TRAINER.KDPL.CA_DICTIONARY to its path."
        ) from exc
    digest = sha256_of(tmp)
    if digest != DICTIONARY_SHA256:
        os.remove(tmp)
        raise RuntimeError(f"Downloaded dictionary has SHA-256 {digest}, expected {DICTIONARY_SHA256}.")
    os.replace(tmp, target)
    return target


def load_class_dictionary(path: str = "") -> Tuple[List[str], str, str]:
    """(names, path, sha256) from ``path`` or the cached/downloaded authors' file."""
    path = path or download_class_dictionary()
    return read_class_dictionary(path), path, sha256_of(path)
