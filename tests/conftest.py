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


def speech(tmp: Path, seconds: float = 1.0) -> Path:
    """A cut of the real speech recording (25 frames per second of it), as 16-bit PCM in `tmp`."""
    import soundfile as sf

    path = tmp / f"speech-{seconds:g}s.wav"
    if not path.exists():
        wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16")
        sf.write(path, wave[: int(seconds * sr)], sr, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def speech_12s(tmp_path_factory) -> Path:
    """12.5 s of the test speech: 5 windows at 81 frames, overlap 5."""
    return speech(tmp_path_factory.mktemp("speech"), 12.5)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on a spare local port (tests/sshd_server.py); no sshd is a failure, not a skip."""
    from sshd_server import Sshd

    try:
        server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


def run_cli(*args, timeout=600, env=None):
    """Run the installed CLI the way a user does (a real subprocess)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "stableavatar", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=str(REPO))


# Blender as a module can hang for ever in its C++ static destructors when the process exits (seen with
# bpy 4.5.15 after a GPU-backed render: a GPU worker thread still waits on the condition variable being
# destroyed). Once pytest has reported, run the Python exit handlers ourselves and leave without the C++ ones.
_EXIT_STATUS = [0]


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS[0] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "bpy" in sys.modules:
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[0])
