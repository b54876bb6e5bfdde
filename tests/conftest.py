"""Shared fixtures. Tests needing ../shared skip when it is absent, and fail under TICKETS_REQUIRE_DATA=1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path} (set TICKETS_DATA / TICKETS_MODELS or place ../shared beside the repo)"
    if os.environ.get("TICKETS_REQUIRE_DATA") == "1":
        pytest.fail(msg + "; TICKETS_REQUIRE_DATA=1 makes this a failure")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data root (…/shared/data)."""
    return _require(Path(os.environ.get("TICKETS_DATA", SHARED / "data")), "shared data")


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """The pre-trained weights root (…/shared/models)."""
    return _require(Path(os.environ.get("TICKETS_MODELS", SHARED / "models")), "shared models")


def pytest_configure(config):
    """One intra-op thread: the test models are tiny, and on a 2-core machine extra threads only contend."""
    import torch

    torch.set_num_threads(int(os.environ.get("TICKETS_TEST_THREADS", "1")))


def _edit_safetensors_header(path: Path, edit) -> Path:
    """A copy of the safetensors file ``path`` (as ``edited-<name>`` beside it) whose header metadata was changed in
    place by ``edit(metadata_dict)``; the tensors are untouched. For tests that forge or damage ticket headers."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header["__metadata__"])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    out = path.with_name("edited-" + path.name)
    out.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    return out


@pytest.fixture
def edit_header():
    """``edit_header(path, edit) -> Path``: see ``_edit_safetensors_header``."""
    return _edit_safetensors_header
