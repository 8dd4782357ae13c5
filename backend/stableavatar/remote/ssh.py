"""The system OpenSSH client as the transport (docs/remote.md): its command line, and what its failures mean.

`ssh -T -o BatchMode=yes ... HOST '<remote command> serve --stdio ...'` carries the protocol unchanged over the
connection's stdin/stdout. BatchMode makes ssh fail at once where it would otherwise prompt (an unknown host
key, a password, a passphrase), ConnectTimeout bounds the connect, and ServerAliveInterval/CountMax notice a
connection that went silent, so every failure ends ssh within seconds with its exit status 255 (or the remote
shell's 126/127) and a line on stderr. `classify` turns those into one line and a hint each.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass

HOST_KEY_POLICIES = ("yes", "accept-new")  # StrictHostKeyChecking: never "no" (a changed key is always refused)


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str = ""
    port: int = 22
    identity: str = ""          # private key file (default: ssh's own choice, agent, ~/.ssh/config)
    known_hosts: str = ""       # UserKnownHostsFile (default: ~/.ssh/known_hosts)
    host_keys: str = "yes"      # StrictHostKeyChecking: yes, or accept-new (trust a first-seen host)
    connect_timeout: int = 10
    alive_interval: int = 5     # ServerAliveInterval x ServerAliveCountMax = seconds until a silent link is dropped
    alive_count: int = 3

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def label(self) -> str:
        return self.destination + (f" port {self.port}" if self.port != 22 else "")

    def problems(self) -> list[str]:
        """What makes this target unusable, as sentences (empty: fine)."""
        out = []
        if not self.host.strip():
            out.append("the remote host is empty")
        for what, value in (("host", self.host), ("user", self.user)):
            if value.startswith("-") or any(c.isspace() for c in value) or "@" in value and what == "user":
                out.append(f"the remote {what} {value!r} is not a host or user name")
        if not 0 < int(self.port) < 65536:
            out.append(f"the SSH port {self.port} is out of range 1..65535")
        if self.host_keys not in HOST_KEY_POLICIES:
            out.append(f"host keys must be one of {', '.join(HOST_KEY_POLICIES)}")
        if self.identity and not os.path.isfile(os.path.expanduser(self.identity)):
            out.append(f"the identity file {self.identity} does not exist")
        if ssh_program() is None:
            out.append("no OpenSSH client (ssh) was found on this machine")
        return out

    def argv(self, remote_command: str) -> list[str]:
        """The ssh command line running `remote_command` (a remote shell command line) on the target."""
        opts = {"BatchMode": "yes", "ConnectTimeout": self.connect_timeout, "ServerAliveInterval": self.alive_interval,
                "ServerAliveCountMax": self.alive_count, "StrictHostKeyChecking": self.host_keys,
                "LogLevel": "ERROR", "ExitOnForwardFailure": "yes"}
        if self.known_hosts:
            opts["UserKnownHostsFile"] = os.path.expanduser(self.known_hosts)
        argv = [ssh_program() or "ssh", "-T", "-e", "none", "-p", str(int(self.port))]
        if self.identity:
            argv += ["-i", os.path.expanduser(self.identity)]
            opts["IdentitiesOnly"] = "yes"
        for k, v in opts.items():
            argv += ["-o", f"{k}={v}"]
        return argv + [self.destination, remote_command]


def ssh_program() -> str | None:
    """OpenSSH's client: on PATH (Linux, macOS), or where Windows 10+ installs it."""
    found = shutil.which("ssh")
    if found is None and os.name == "nt":
        win = os.path.join(os.environ.get("SystemRoot", r"C:\Windows"), "System32", "OpenSSH", "ssh.exe")
        found = win if os.path.isfile(win) else None
    return found


def remote_command(command: str, args: list[str]) -> str:
    """`command` (the user's remote shell text, e.g. `~/sa/.venv/bin/stableavatar`) followed by `args`, each quoted
    for the remote POSIX shell (a leading `~/` stays outside the quotes, so the remote shell expands it)."""
    def quote(a: str) -> str:
        return "~/" + shlex.quote(a[2:]) if a.startswith("~/") else shlex.quote(a)
    return " ".join([command.strip(), *(quote(str(a)) for a in args)])


@dataclass(frozen=True)
class Failure:
    kind: str        # host_key, host_key_changed, auth, key_file, refused, unreachable, dns, dropped, not_found,
                     # not_backend, exited
    message: str     # one line
    hint: str
    retry: bool      # whether reconnecting later can help (the network), or the setup must change first

    def text(self) -> str:
        return f"{self.message}\nhint: {self.hint}"


_SSH_PATTERNS = [  # (kind, stderr pattern); first match wins
    ("host_key_changed", r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed"),
    ("host_key", r"Host key verification failed|No \S+ host key is known"),
    ("key_file", r"UNPROTECTED PRIVATE KEY FILE|bad permissions|Load key .*: invalid format"),
    ("auth", r"Permission denied \(|Too many authentication failures|no mutual signature"),
    ("dns", r"Could not resolve hostname|Name or service not known|nodename nor servname"),
    ("refused", r"Connection refused"),
    ("unreachable", r"timed out|No route to host|Network is unreachable|Host is down"),
    ("dropped", r"closed by remote host|Connection reset|Broken pipe|not responding|Connection closed|"
                r"client_loop|packet_write_wait|Connection to .* closed"),
]


def classify(returncode: int | None, stderr: str, target: SshTarget, command: str, was_ready: bool) -> Failure:
    """What an ended ssh means. was_ready: the remote worker had said `ready` on this connection."""
    host, text = target.label, stderr or ""
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    if returncode is None:  # ssh itself could not be started
        return Failure("ssh", f"ssh could not be started ({last})", "install the OpenSSH client or put ssh on PATH",
                       False)
    if returncode is not None and returncode < 0:  # our ssh was killed (by us, the OS, or a test): a cut link
        return Failure("dropped", f"the SSH connection to {host} was cut (ssh ended by signal {-returncode})",
                       "it reconnects by itself; press Retry if it gave up", True)
    if returncode == 255:
        kind = next((k for k, pat in _SSH_PATTERNS if re.search(pat, text)), "dropped" if was_ready else "ssh")
        return _ssh_failure(kind, host, target, last)
    if not was_ready and returncode in (126, 127):
        return Failure("not_found", f"the remote backend command {command!r} was not found on {host} ({last})",
                       "install the backend on the GPU machine (docs/remote.md) and set the remote command to its "
                       "`stableavatar`, e.g. ~/stableavatar/.venv/bin/stableavatar", False)
    if not was_ready and re.search(r"No module named|ModuleNotFoundError|invalid choice|unrecognized arguments", text):
        return Failure("not_backend", f"{command!r} on {host} is not this version's StableAvatar backend ({last})",
                       "install or update the backend there (pip install -e <this repository>, docs/remote.md)",
                       False)
    when = "before it was ready" if not was_ready else "unexpectedly"
    return Failure("exited", f"the remote backend on {host} exited {when} (exit code {returncode})"
                   + (f": {last}" if last else ""), "see the backend log; press Retry to resume the job", False)


def _ssh_failure(kind: str, host: str, t: SshTarget, last: str) -> Failure:
    kh = t.known_hosts or "~/.ssh/known_hosts"
    manual = f"ssh -p {t.port} {t.destination}"
    table = {
        "host_key": (f"the host key of {host} is not known (strict host key checking)",
                     f"connect once in a terminal ({manual}), compare the fingerprint with the GPU machine's and "
                     f"accept it into {kh}, or set Host keys to Accept new (--accept-new-host-key)", False),
        "host_key_changed": (f"the host key of {host} has CHANGED since it was stored in {kh}",
                             "this can be an attack; if the machine was reinstalled, remove the old key with "
                             f"ssh-keygen -R and connect once with {manual}", False),
        "key_file": (f"the SSH key {t.identity or '(default)'} cannot be used ({last})",
                     "chmod 600 the private key file, or point Identity file at a valid OpenSSH key", False),
        "auth": (f"{host} refused the SSH key ({last})",
                 f"add your public key to ~/.ssh/authorized_keys on the GPU machine (ssh-copy-id {t.destination}), "
                 "or set Identity file to the key it knows; a key with a passphrase must be in ssh-agent", False),
        "dns": (f"the host name {t.host} cannot be resolved", "check the spelling, DNS or VPN", True),
        "refused": (f"nothing accepts SSH connections on {host} (connection refused)",
                    "check the host and port, and that sshd runs on the GPU machine", True),
        "unreachable": (f"{host} cannot be reached ({last})",
                        "check the network or VPN, and that the GPU machine is on", True),
        "dropped": (f"the SSH connection to {host} dropped ({last or 'no reason given'})",
                    "it reconnects by itself; press Retry if it gave up", True),
        "ssh": (f"ssh to {host} failed: {last or 'exit code 255'}", f"try {manual} in a terminal", False),
    }
    message, hint, retry = table[kind]
    return Failure(kind, message, hint, retry)
