"""Shared fixtures for the binding's tests.

DIFFUSE_LIBRARY points at the libdiffuse under test (scripts/python-tests.sh
sets it to the fresh build); DIFFUSE_FIXTURES at tests/fixtures. Both fall
back to this checkout. Generation settings are kept tiny (32x32, 2 Euler
steps, no guidance: ~0.1 s a call) except where a test needs more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[3]

if not os.environ.get("DIFFUSE_LIBRARY") and (REPO / "build" / "libdiffuse.so.0").exists():
    os.environ["DIFFUSE_LIBRARY"] = str(REPO / "build" / "libdiffuse.so.0")

try:
    import diffuse  # the installed package (pip install ./bindings/python)
except ImportError:  # running from the checkout without installing
    import sys

    sys.path.insert(0, str(REPO / "bindings" / "python" / "src"))
    import diffuse

#: Fast generate() settings for tests that do not care about the picture.
FAST: Dict[str, Any] = dict(steps=2, guidance=1.0, sampler="euler", size=(32, 32))


def fixtures_dir() -> Path:
    return Path(os.environ.get("DIFFUSE_FIXTURES") or REPO / "tests" / "fixtures")


def header_path() -> Path:
    return Path(os.environ.get("DIFFUSE_INCLUDE") or REPO / "include") / "diffuse.h"


@pytest.fixture(scope="session")
def model_path() -> str:
    path = fixtures_dir() / "models" / "tiny-sd1"
    if not (path / "model_index.json").exists():
        pytest.fail(f"test model missing: {path}")
    return str(path)


@pytest.fixture(scope="session")
def model(model_path: str) -> Iterator[diffuse.Model]:
    with diffuse.Model(model_path) as m:
        yield m


@pytest.fixture
def ctx(model: diffuse.Model) -> Iterator[diffuse.Context]:
    with diffuse.Context(model, device="cpu") as c:
        yield c
