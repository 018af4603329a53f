"""The dataset errors a user must fix (paths, formats, caches); every module of the package raises these."""
from __future__ import annotations

__all__ = ["DatasetError", "DatasetNotFoundError", "SplitGenerationError"]


class DatasetError(RuntimeError):
    """Base class for dataset problems the user must fix (paths, formats, caches)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset folder, image folder, split file or class-name file is missing."""


class SplitGenerationError(DatasetError):
    """A split file is missing and generating one was not allowed or is not supported."""
