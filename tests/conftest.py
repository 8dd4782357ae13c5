import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PARITY = TESTS / "data" / "parity"
MEDIA = TESTS / "data" / "media"
TINY = PARITY / "checkpoints"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return MEDIA


@pytest.fixture(scope="session")
def tiny_tree() -> Path:
    return TINY


@pytest.fixture(scope="session")
def arch() -> dict:
    return json.loads((TINY / "arch.json").read_text())


def run_cli(*args, timeout=600, env=None):
    """Run the installed CLI the way a user does (a real subprocess)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "stableavatar", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=str(REPO))
