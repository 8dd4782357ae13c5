"""A real OpenSSH server for the remote-backend tests and bench/remote_overhead.py: Debian's sshd started on a
spare port of 127.0.0.1 with its own host key, one authorised client key, and a known-hosts file that knows it.

Works as root (CI) and as a normal user (sshd then only lets that user in, which is who the tests log in as).
sshd resets the environment, so the remote command names the interpreter and PYTHONPATH itself. A missing sshd
fails loudly: `.ci/run` installs openssh-server, and a remote test that silently skipped would prove nothing.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MISSING = ("OpenSSH server not found ({}): the remote-backend tests need a real sshd. Install it with "
           "`apt-get update && apt-get install -y openssh-server` (.ci/run does), or set STABLEAVATAR_SSHD")


def sshd_program() -> str | None:
    path = os.environ.get("STABLEAVATAR_SSHD") or shutil.which("sshd") or "/usr/sbin/sshd"
    return path if os.access(path, os.X_OK) else None


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


def spare_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_command(python: str) -> str:
    """The remote command that runs this checkout's backend (sshd passes no environment of ours)."""
    return f"env PYTHONPATH={ROOT / 'backend'} OMP_NUM_THREADS=1 {python} -m stableavatar"


class Sshd:
    def __init__(self, folder: Path):
        self.dir = Path(folder)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = spare_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sshd":
        program = sshd_program()
        if program is None:
            raise RuntimeError(MISSING.format(os.environ.get("STABLEAVATAR_SSHD") or "/usr/sbin/sshd"))
        d = self.dir
        host_key, self.key, self.wrong_key = keygen(d / "host_key"), keygen(d / "client_key"), keygen(d / "wrong_key")
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        self.known_hosts = d / "known_hosts"
        kind, blob = (d / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")
        self.empty_known_hosts = d / "known_hosts_empty"
        self.empty_known_hosts.write_text("")
        config = d / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}",
            "StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", f"AllowUsers {self.user}",
            "PrintMotd no", "UseDNS no", "ClientAliveInterval 5", "ClientAliveCountMax 3", ""]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        self.log = d / "sshd.log"
        self.proc = subprocess.Popen([program, "-D", "-f", str(config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = self.log.read_text() if self.log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"sshd did not start on port {self.port}: {log[-2000:]}")
                time.sleep(0.1)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def settings(self, python: str, jobs_root: Path, **changes) -> dict:
        """RemoteConfig's fields for this server and this checkout's backend (the add-on's preferences too)."""
        return {"host": "127.0.0.1", "user": self.user, "port": self.port, "identity": str(self.key),
                "known_hosts": str(self.known_hosts), "host_keys": "yes", "command": backend_command(python),
                "checkpoints": str(ROOT / "tests" / "data" / "parity" / "checkpoints"), "jobs_root": str(jobs_root),
                **changes}
