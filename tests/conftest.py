"""Test setup: no hub access, no registry-probing threads, repository root importable."""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.modules.setdefault("outdated", None)  # type: ignore[arg-type]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope="module")
def single_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine they lose 10x to oversubscription."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config) -> None:
    """CI sets REQUIRE_DASSL=1: there a missing Dassl fails the run instead of skipping its integration tests."""
    if os.environ.get("REQUIRE_DASSL") == "1":
        try:
            import dassl  # noqa: F401
        except ImportError as exc:
            raise pytest.UsageError(
                f"REQUIRE_DASSL=1 but Dassl is not importable ({exc}); install it with "
                "`bash scripts/install_dassl.sh ../shared/vendor/Dassl.pytorch-c61a1b5.tar.gz`") from exc
