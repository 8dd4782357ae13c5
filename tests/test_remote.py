"""The remote backend's pieces without a network: the worker's put/fetch/files against real files under a jobs
root, the client's verified, resumable transfers driven against those very handlers through the real line
framing, the ssh command line, path mapping, and the add-on loading this same client package. Through a real
OpenSSH server: tests/test_remote_ssh.py and tests/blender/test_blender_remote.py."""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from stableavatar import contract
from stableavatar.contract import ContractError, TRANSFER_CHUNK_BYTES
from stableavatar.remote import PathMap, RemoteConfig, mirror, remote_name, ssh
from stableavatar.service import transfer
from stableavatar.service.jobdir import JobDir
from stableavatar.service.jobs_root import JobsRoot


class Wire:
    """The worker's transfer handlers behind the protocol's framing, answering in order like the reader thread."""

    def __init__(self, root: JobsRoot, on_send=None):
        self.root, self.answers, self.on_send, self.sent = root, [], on_send, []

    def send(self, op, **fields):
        request = contract.parse_request(contract.encode(contract.request(op, **fields)))
        self.sent.append(request)
        if self.on_send:
            self.on_send(request)
        self.answers.append(contract.encode(transfer.answer(self.root, request)))

    def reply(self):
        line = self.answers.pop(0)
        assert len(line) < contract.MAX_LINE_BYTES
        return contract.parse_event(line)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path) -> JobsRoot:
    return JobsRoot(tmp_path / "jobs")


def test_a_largest_chunk_fits_one_line():
    ev = contract.event("chunk", job_dir="/j" * 500, path="frames/000000.png", offset=0, size=1, sha256="0" * 64,
                        eof=False, data=__import__("base64").b64encode(b"\xff" * TRANSFER_CHUNK_BYTES).decode())
    assert len(contract.encode(ev)) < contract.MAX_LINE_BYTES


def test_upload_resumes_from_what_the_worker_holds_and_is_verified(root, tmp_path):
    data = os.urandom(2 * TRANSFER_CHUNK_BYTES + 1234)
    src = tmp_path / "face.png"
    src.write_bytes(data)
    wire = Wire(root)
    calls = []
    sent = mirror.upload(wire.send, wire.reply, "job1", str(src), "inputs/reference.png",
                         stop=lambda: len(calls.append(1) or calls) > 1)  # interrupted after one chunk
    assert sent == TRANSFER_CHUNK_BYTES
    target = root.path / "job1" / "inputs" / "reference.png"
    assert not target.exists()  # only a whole, verified file gets its name
    assert (target.parent / ".reference.png.upload.partial").stat().st_size == TRANSFER_CHUNK_BYTES
    sent = mirror.upload(wire.send, wire.reply, "job1", str(src), "inputs/reference.png", stop=lambda: False)
    assert sent == len(data) - TRANSFER_CHUNK_BYTES  # continued, not restarted
    assert target.read_bytes() == data and not list(target.parent.glob(".*"))
    again = Wire(root)
    assert mirror.upload(again.send, again.reply, "job1", str(src), "inputs/reference.png", lambda: False) == 0


def test_a_corrupt_upload_is_discarded_and_a_busy_folder_refused(root):
    wire = Wire(root)
    wire.send("put", job_dir="job2", path="inputs/audio.wav", size=3, sha256="0" * 64, data="YWJj")
    err = wire.reply()
    assert err["type"] == "error" and err["category"] == "bad_input" and "discarded" in err["message"]
    assert err["path"] == "inputs/audio.wav" and err["op"] == "put"
    assert not list((root.path / "job2" / "inputs").iterdir())
    with JobDir(root.path / "job2").lock():  # a job queued or running there
        wire.send("put", job_dir="job2", path="inputs/audio.wav", size=3, sha256=sha(b"abc"), data="YWJj")
        assert wire.reply()["category"] == "busy"
    wire.send("put", job_dir="job2", path="inputs/audio.wav", size=3, sha256=sha(b"abc"), offset=1, data="YWJj")
    assert "do not continue" in wire.reply()["message"]  # a gap is refused, not filled with zeros


def test_download_resumes_a_partial_file_and_restarts_a_replaced_one(root, tmp_path):
    job = root.path / "job3"
    (job / "frames").mkdir(parents=True)
    first = os.urandom(TRANSFER_CHUNK_BYTES * 2 + 99)
    (job / "frames" / "000000.png").write_bytes(first)
    local = tmp_path / "here" / "frames" / "000000.png"
    local.parent.mkdir(parents=True)
    Path(mirror.partial_of(str(local))).write_bytes(first[:TRANSFER_CHUNK_BYTES])  # an interrupted earlier fetch
    wire = Wire(root)
    got = mirror.download(wire.send, wire.reply, "job3", [("frames/000000.png", str(local))])
    assert got == len(first) - TRANSFER_CHUNK_BYTES and local.read_bytes() == first
    assert [r["offset"] for r in wire.sent] == [TRANSFER_CHUNK_BYTES, 2 * TRANSFER_CHUNK_BYTES]

    second = os.urandom(TRANSFER_CHUNK_BYTES + 5)
    replaced = []

    def replace_once(request):  # the file is replaced on the remote after its first chunk was read
        if request["offset"] and not replaced:
            os.replace(job / "frames" / "new.png", job / "frames" / "000001.png")
            replaced.append(1)

    (job / "frames" / "000001.png").write_bytes(first)
    (job / "frames" / "new.png").write_bytes(second)
    wire = Wire(root, on_send=replace_once)
    target = tmp_path / "here" / "frames" / "000001.png"
    mirror.download(wire.send, wire.reply, "job3", [("frames/000001.png", str(target))])
    assert target.read_bytes() == second and [r["offset"] for r in wire.sent][-2:] == [0, TRANSFER_CHUNK_BYTES]


def test_files_lists_a_job_folder(root):
    job = root.path / "job4"
    (job / "frames").mkdir(parents=True)
    for i, size in enumerate((3, 4)):
        (job / "frames" / f"{i:06d}.png").write_bytes(b"x" * size)
    (job / "frames" / "000003.png").write_bytes(b"gap")  # after a gap: not part of the sequence
    (job / "job.json").write_text("{}")
    (job / ".video.abc.partial.mp4").write_bytes(b"tmp")
    (job / "lock").write_text("")
    wire = Wire(root)
    wire.send("files", job_dir="job4")
    ev = wire.reply()
    assert ev["frames"] == [3, 4] and ev["other"] == {"job.json": 2} and ev["finished"] is False
    wire.send("files", job_dir="nothing-here")
    assert wire.reply()["type"] == "error"


@pytest.mark.parametrize("name, fragment", [("../outside", "outside"), ("/etc", "outside"), (".", "jobs root itself"),
                                            ("a/../../x", "outside")])
def test_job_folders_outside_the_root_are_refused(root, name, fragment):
    with pytest.raises(ContractError, match=fragment) as exc:
        root.job_dir(name, "submit", "j")
    assert exc.value.category == "bad_request" and exc.value.id == "j"


def test_a_confined_submit_resolves_paths_inside_the_root(root, tmp_path):
    cmd = root.confine_submit({"op": "submit", "id": "j", "job_dir": "job5", "image": "job5/inputs/reference.png",
                               "audio": str(root.path / "job5" / "inputs" / "audio.wav")})
    assert cmd["job_dir"] == str(root.path / "job5") and cmd["image"] == str(root.path / "job5/inputs/reference.png")
    with pytest.raises(ContractError, match="image .* is outside"):
        root.confine_submit({"op": "submit", "job_dir": "job5", "image": str(tmp_path / "face.png"), "audio": "a"})


def test_a_worker_without_jobs_root_refuses_transfers():
    ev = transfer.answer(None, {"op": "fetch", "job_dir": "x", "path": "job.json"})
    assert ev["type"] == "error" and "--jobs-root" in ev["hint"]


def test_ssh_command_line():
    t = ssh.SshTarget(host="gpu.example", user="ana", port=2222, identity="~/.ssh/id_gpu",
                      known_hosts="/tmp/kh", host_keys="accept-new")
    argv = t.argv(ssh.remote_command("~/sa/.venv/bin/stableavatar", ["serve", "--jobs-root", "my jobs", "~/jobs"]))
    opts = {argv[i + 1].split("=")[0]: argv[i + 1].split("=", 1)[1] for i, a in enumerate(argv) if a == "-o"}
    assert opts["BatchMode"] == "yes" and opts["StrictHostKeyChecking"] == "accept-new"
    assert opts["ConnectTimeout"] == "10" and opts["ServerAliveInterval"] == "5" and opts["ServerAliveCountMax"] == "3"
    assert opts["UserKnownHostsFile"] == "/tmp/kh" and opts["IdentitiesOnly"] == "yes"
    assert argv[argv.index("-i") + 1] == os.path.expanduser("~/.ssh/id_gpu") and "-T" in argv
    assert argv[-2:] == ["ana@gpu.example", "~/sa/.venv/bin/stableavatar serve --jobs-root 'my jobs' ~/jobs"]
    assert ssh.SshTarget(host="-oProxyCommand=x").problems()  # never an option in disguise
    assert "the remote host is empty" in ssh.SshTarget(host="").problems()


def test_config_confines_the_worker_and_maps_shared_storage():
    cfg = RemoteConfig(host="gpu", checkpoints="/w", local_prefix="/Volumes/shots", remote_prefix="/mnt/shots")
    args = cfg.serve_args(contract.EngineSettings(checkpoints="/local/w", device="cuda"))
    assert args[:4] == ["serve", "--stdio", "--jobs-root", "/mnt/shots"] and args[args.index("--checkpoints") + 1] == "/w"
    pm = cfg.pathmap()
    assert pm.to_remote("/Volumes/shots/a/b.png") == "/mnt/shots/a/b.png" and pm.to_remote("/Volumes/shotsX") is None
    assert pm.to_local("/mnt/shots/a/frames") == "/Volumes/shots/a/frames"
    win = PathMap("S:\\shots", "/mnt/shots")
    assert win.to_remote("S:\\shots\\job\\inputs\\audio.wav") == "/mnt/shots/job/inputs/audio.wav"
    assert win.to_local("/mnt/shots/job/frames") == "S:\\shots\\job\\frames"
    assert RemoteConfig(host="gpu").root() == "stableavatar-jobs"
    assert "both" in RemoteConfig(host="gpu", local_prefix="/x").problems()[-1]
    a, b = remote_name("/tmp/jobs/20260101-1"), remote_name("/other/jobs/20260101-1")
    assert a.startswith("20260101-1-") and a != b and a == remote_name("/tmp/jobs/20260101-1/")


def test_failures_name_the_cause(tmp_path):
    t = ssh.SshTarget(host="gpu", user="ana")
    dropped = ssh.classify(-9, "", t, "stableavatar", True)
    assert dropped.kind == "dropped" and dropped.retry
    late = ssh.classify(255, "Timeout, server gpu not responding.", t, "stableavatar", True)
    assert late.kind == "dropped" and late.retry
    crashed = ssh.classify(1, "Traceback ...\nMemoryError", t, "stableavatar", True)
    assert crashed.kind == "exited" and not crashed.retry and "MemoryError" in crashed.message


def test_the_addon_loads_this_very_remote_package():
    sys.path.insert(0, str(REPO))
    from blender_addon import contract as addon_contract
    from blender_addon import remote as addon_remote

    package = Path(mirror.__file__).parent
    assert Path(addon_remote.__file__).parent == package
    assert addon_remote.backend.contract is addon_contract  # the add-on's contract, not a second copy
    for f in package.glob("*.py"):  # standard library and the contract only: it runs inside Blender
        for line in f.read_text().splitlines():
            if line.startswith(("import ", "from ")) and not line.startswith(("from .", "from __future__")):
                assert line.split()[1].split(".")[0] in sys.stdlib_module_names, (f.name, line)
            if line.startswith("from .."):
                assert line.startswith(("from .. import contract", "from ..contract import")), (f.name, line)


def test_rows_show_a_remote_failure_and_connection_news():
    from blender_addon import rows
    row = SimpleNamespace(status=rows.RUNNING, message="", error_text="")
    rows.connection_note(row, "the SSH connection to gpu dropped; reconnecting in 2 s (attempt 2)")
    assert row.message.startswith("the SSH connection to gpu dropped")
    assert not rows.backend_stopped(row, 255, "", "", False, reason="gpu refused the SSH key", hint="add the key")
    assert row.status == rows.ERROR and row.message == "gpu refused the SSH key" and "hint: add the key" in row.error_text


def test_a_missing_ssh_program_is_one_line_not_a_crash(tmp_path):
    import queue
    cfg = RemoteConfig(host="gpu")
    events: queue.Queue = queue.Queue()
    backend = cfg.backend(contract.EngineSettings(), str(tmp_path / "log"), events)
    backend.argv = [str(tmp_path / "no-such-ssh")] + backend.argv[1:]
    backend.start()
    backend.submit("j", str(tmp_path / "job"), image=str(tmp_path / "a.png"), audio=str(tmp_path / "a.wav"))
    ev = events.get(timeout=10)
    assert ev["type"] == "exit" and "ssh could not be started" in ev["message"] and ev["hint"]
    backend.stop(1.0)
    assert not backend.alive
