"""What the fault suite (tests/test_faults_*.py) shares: inputs, the CLI run the way `stableavatar` runs it, the
one-line error check, hashes of every file a user has, and real faulty filesystems (a full tmpfs, a read-only
mount, a folder an unprivileged process may not write)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import PARITY, REPO, TINY, speech  # noqa: F401  (speech: the fault tests take it from here)

IMAGE = PARITY / "inputs" / "reference.png"
SIZE = ["--width", "32", "--height", "32", "--steps", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "backend")}


@dataclass
class Outcome:
    code: int | None       # exit status; None when the command raised (a traceback)
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error: ")]

    def one_error(self, code: int, *fragments: str) -> None:
        """Exactly one `error:` line holding every fragment, a `hint:` line, no traceback, exit `code`."""
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        assert self.code == code and len(self.errors) == 1, (self.code, self.stderr[-2000:])
        assert "hint: " in self.stderr, self.stderr[-2000:]
        for f in fragments:
            assert f in self.errors[0], (f, self.errors[0])


def cli(*argv, cwd: Path | None = None) -> Outcome:
    """`stableavatar ARGV` in this process (cli.main, the console script's entry): stderr captured, an escaping
    exception (the user would see a traceback) becomes code None."""
    from stableavatar import cli as cli_mod

    err = io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stderr(err):
            code = cli_mod.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - what a user would get as a traceback
        err.write("Traceback (in-process)\n" + traceback.format_exc())
        code = None
    finally:
        os.chdir(old)
    return Outcome(code, err.getvalue())


def generate(out, audio: Path, *extra, tree: Path = TINY, image: Path = IMAGE, cwd: Path | None = None) -> Outcome:
    return cli("generate", "--checkpoints", tree, "--image", image, "--audio", audio, "--out", out, *SIZE, *extra,
               cwd=cwd)


def cli_process(*argv, cwd: Path | None = None, unprivileged: bool = False, umask: int | None = None,
                timeout: float = 300) -> Outcome:
    """`python -m stableavatar ARGV` as a real subprocess; `unprivileged`: without the power to ignore file
    permissions (root drops CAP_DAC_OVERRIDE through setpriv), so a read-only folder is read-only."""
    cmd = [sys.executable, "-m", "stableavatar", *map(str, argv)]
    if unprivileged and os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot drop the permission override")
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *cmd]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd,
                         preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    return Outcome(res.returncode, res.stderr)


# ------------------------------------------------------------------------------------------ the user's files
def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (relative path -> digest); symbolic links by their target."""
    out = {}
    for top, _dirs, names in os.walk(root):
        for n in names:
            p = Path(top) / n
            rel = p.relative_to(root).as_posix()
            out[rel] = "link:" + os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_untouched(before: dict[str, str], root: Path) -> None:
    """Every file that was there is still there, byte for byte."""
    after = snapshot(root)
    changed = sorted(k for k, v in before.items() if after.get(k) != v)
    assert not changed, f"user files changed or deleted: {changed[:5]}"


def partial_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if ".partial" in p.name)


def frame_names(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "frames").glob("[0-9]*.png"))


def frames(folder: Path) -> dict[str, bytes]:
    return {n: (folder / "frames" / n).read_bytes() for n in frame_names(folder)}


# ------------------------------------------------------------------------------------------ faulty filesystems
@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1M", read_only: bool = False):
    """A real small filesystem at `path` (a full disk is a real ENOSPC, read-only a real EROFS). Needs the
    right to mount (root here); skipped where it is missing."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size},mode=0777" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()[:100]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int = 0) -> Path:
    """Fill the filesystem holding `path` until `leave` bytes are free (0: until the drive refuses more)."""
    filler = path / "filler.bin"
    with open(filler, "ab") as f:
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                f.write(b"\0" * min(1 << 16, max(st.f_frsize, free - leave)))
                f.flush()
            except OSError:
                break
    return filler


def copy_tree(tmp: Path, name: str = "tree") -> Path:
    """A private copy of the tiny checkpoint tree, to damage."""
    dst = tmp / name
    shutil.copytree(TINY, dst)
    return dst
