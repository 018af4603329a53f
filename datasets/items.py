"""Plain image items and split lists, so parsing can be tested (and used by tools) without Dassl installed.

The Dassl layer (:mod:`datasets.dassl_base`) converts items to ``dassl`` ``Datum`` objects at the very end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

__all__ = ["Item", "Splits"]


@dataclass(frozen=True)
class Item:
    """One labelled image; mirrors dassl ``Datum`` (impath, label, domain, classname) without its file check."""

    impath: str
    label: int
    classname: str = ""
    domain: int = 0

    def with_label(self, label: int) -> "Item":
        return Item(self.impath, label, self.classname, self.domain)


@dataclass
class Splits:
    """train / val / test lists of items. ``val`` may equal ``test`` (ImageNet) or be empty (test-only sets)."""

    train: List[Item]
    val: List[Item]
    test: List[Item]

    def as_tuple(self) -> Tuple[List[Item], List[Item], List[Item]]:
        return self.train, self.val, self.test
