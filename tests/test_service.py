"""End to end: a real `python -m stableavatar serve --stdio` worker on the tiny parity tree with the real media.

No mocks and no blind sleeps: every wait is on a protocol event (or process exit) with a deadline. One worker
serves most checks; the crash tests need their own. The only test seam is the `fault` field (OOM injection),
honoured only when the worker runs with STABLEAVATAR_SERVICE_FAULTS=1.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "tests" / "data" / "parity" / "checkpoints"
MEDIA = ROOT / "tests" / "data" / "media"
WAIT = 120  # seconds; generous for 2 shared cores, never reached when things work
SIZE = {"width": 64, "height": 64}
REF_PARAMS = {**SIZE, "steps": 10, "seed": 7}  # 10 steps: the crash tests need time to strike mid-denoise
SHORT_PARAMS = {**SIZE, "steps": 2}
PHASES = ["load", "encode", "denoise", "decode", "mux"]
# One intra-op thread: on a small shared CPU, torch's spinning thread pool under contention made the tiny
# jobs 3-4x slower. Every process in this file (workers and `resume`) uses the same setting.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

pytest.importorskip("stableavatar.engine")
pytestmark = pytest.mark.timeout(300)


# ------------------------------------------------------------------------------------------ helpers
class Serve:
    """A worker subprocess; stdout lines are parsed on a thread into a queue so reads have deadlines."""

    def __init__(self, tmp: Path, *extra: str, faults: bool = False, checkpoints: Path = CHECKPOINTS):
        env = dict(ENV)
        if faults:
            env["STABLEAVATAR_SERVICE_FAULTS"] = "1"
        self.stderr_path = tmp / f"worker-stderr-{time.monotonic_ns()}.txt"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stableavatar", "serve", "--stdio", "--checkpoints", str(checkpoints),
             "--log-dir", str(tmp / "logs"), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.stderr_path, "wb"), cwd=tmp, env=env)
        self.messages: queue.Queue = queue.Queue()
        self.transcript: list[tuple[str, dict]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        from stableavatar import contract
        for raw in self.proc.stdout:
            try:  # stdout must carry nothing but protocol lines, each as the contract defines it
                msg = contract.parse_event(raw)
            except contract.ContractError as exc:
                msg = {"type": "contract-violation", "line": raw.decode(errors="replace"), "why": exc.message}
            assert msg["protocol"] == 1, msg
            self.messages.put(msg)
        self.messages.put(None)

    def send(self, obj) -> None:
        data = obj if isinstance(obj, bytes) else (json.dumps(obj) + "\n").encode()
        if not isinstance(obj, bytes):
            self.transcript.append(("->", obj))
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, timeout: float = WAIT) -> dict | None:
        try:
            msg = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s; worker stderr:\n{self.stderr_tail()}") from None
        assert msg is None or msg["type"] != "contract-violation", msg
        if msg is not None:
            self.transcript.append(("<-", msg))
        return msg

    def until(self, pred, timeout: float = WAIT) -> list[dict]:
        """Messages up to and including the first that satisfies pred."""
        deadline = time.monotonic() + timeout
        out = []
        while True:
            msg = self.next(max(0.1, deadline - time.monotonic()))
            assert msg is not None, f"worker exited; got {out[-3:]}\n{self.stderr_tail()}"
            out.append(msg)
            if pred(msg):
                return out

    def terminal(self, job_id: str, timeout: float = WAIT) -> list[dict]:
        return self.until(lambda m: m.get("id") == job_id and m["type"] in ("done", "error", "cancelled"), timeout)

    def stderr_tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "shutdown"})
                self.until(lambda m: m["type"] == "bye", 60)
            except (AssertionError, OSError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def submit(worker: Serve, job_id: str, job_dir: Path, audio: Path, params: dict, image: Path = None, **extra):
    worker.send({"op": "submit", "id": job_id, "job_dir": str(job_dir),
                 "image": str(image or MEDIA / "case-1-reference.png"), "audio": str(audio), "params": params,
                 **extra})
    accepted = worker.until(lambda m: m.get("id") == job_id and m["type"] in ("accepted", "error"))[-1]
    assert accepted["type"] == "accepted", accepted
    return accepted


def mid_denoise(min_step: int):
    """A progress event inside a denoising step (not its last window) with >= min_step steps checkpointed."""
    return lambda m: (m["type"] == "progress" and m["phase"] == "denoise" and m["step"] >= min_step
                      and m["window"] < m["windows"])


def state_step(path: Path) -> int:
    """The step stored in a state.safetensors, read from its JSON header (no torch in the test process)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return int(json.loads(f.read(n))["__metadata__"]["step"])


def frames_of(job_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((job_dir / "frames").glob("*.png"))}


def assert_same_frames(job_dir: Path, reference: Path) -> None:
    got, want = frames_of(job_dir), frames_of(reference)
    assert len(want) > 0 and list(got) == list(want)
    different = [n for n in want if got[n] != want[n]]
    assert not different, f"{len(different)} frames differ from the uninterrupted run, first {different[:3]}"


def lock_is_free(job_dir: Path) -> bool:
    from stableavatar.service.jobdir import JobDir, JobLockedError
    try:
        JobDir(job_dir).lock().release()
        return True
    except JobLockedError:
        return False


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


@pytest.fixture(scope="module")
def audio(work) -> dict[str, Path]:
    """Cuts of the real 40 s stereo speech: 4 s (two windows) and 2 s (one window, for cheap jobs)."""
    import soundfile as sf
    wave, sr = sf.read(MEDIA / "case-2-speech.wav", dtype="int16")
    out = {}
    for seconds in (4, 2):
        out[seconds] = work / f"speech-{seconds}s.wav"
        sf.write(out[seconds], wave[: seconds * sr], sr, subtype="PCM_16")
    return out


@pytest.fixture(scope="module")
def worker(work):
    w = Serve(work, faults=True)
    yield w
    w.stop()


@pytest.fixture(scope="module")
def ready(worker):
    msg = worker.next()
    assert msg["type"] == "ready", msg
    return msg


@pytest.fixture(scope="module")
def reference(worker, ready, work, audio):
    """The uninterrupted run every resumed job must reproduce byte for byte."""
    job_dir = work / "reference"
    accepted = submit(worker, "ref", job_dir, audio[4], REF_PARAMS)
    return accepted, worker.terminal("ref"), job_dir


# ------------------------------------------------------------------------------------------ tests
def test_ready_reports_device_weights_and_capabilities(ready):
    assert ready["device"] == "cpu" and ready["memory_mode"] == "full" and ready["gpu"] is None
    assert ready["weights"]["found"] and ready["weights"]["tiny"]
    assert Path(ready["weights"]["path"]) == CHECKPOINTS
    assert {"stableavatar", "python", "torch", "diffusers", "transformers"} <= set(ready["versions"])
    caps = ready["capabilities"]
    assert "official" in caps["guidance"] and "fixed" in caps["compat"] and "512x512" in caps["resolutions"]
    assert set(caps["memory_modes"]) == {"full", "model_offload", "sequential_offload", "fp8", "auto"}


def test_job_completes_with_events_in_order(reference):
    accepted, events, job_dir = reference
    assert accepted["position"] == 0 and accepted["resumed"] is False and accepted["from_step"] is None
    assert Path(accepted["job_dir"]) == job_dir
    assert events[-1]["type"] == "done", events[-1]
    progress = [m for m in events if m["type"] == "progress"]
    phases = [m["phase"] for m in progress]
    assert [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p] == PHASES  # each once, in order
    fractions = [m["fraction"] for m in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    denoise = [m for m in progress if m["phase"] == "denoise"]
    assert denoise[-1]["step"] == REF_PARAMS["steps"] and denoise[-1]["windows"] == 2
    assert any(m["eta_s"] is not None for m in denoise)
    first_decode = next(i for i, m in enumerate(events) if m.get("phase") == "decode")
    previews = [i for i, m in enumerate(events) if m["type"] == "preview"]
    assert previews and previews[0] > first_decode
    done = events[-1]
    assert done["frames"] == 100 and len(list(Path(done["frames_dir"]).glob("*.png"))) == 100  # 4 s at 25 fps
    assert Path(done["video"]).stat().st_size > 0 and json.loads(Path(done["manifest"]).read_text())
    assert (job_dir / "preview.jpg").read_bytes()[:2] == b"\xff\xd8"
    assert json.loads((job_dir / "job.json").read_text())["params"]["steps"] == REF_PARAMS["steps"]
    assert "job ref: done" in (job_dir / "log").read_text()
    assert not (job_dir / "state.safetensors").exists()  # finished jobs keep frames, not the sampler state
    assert lock_is_free(job_dir)


def test_out_of_memory_then_two_queued_jobs_both_finish(worker, ready, work, audio):
    """OOM -> error with a hint, memory released, and the jobs queued behind it still run."""
    submit(worker, "oom", work / "oom", audio[2], {**SIZE, "steps": 3}, fault="oom@2")
    a = submit(worker, "q1", work / "q1", audio[2], SHORT_PARAMS)
    b = submit(worker, "q2", work / "q2", audio[2], {**SHORT_PARAMS, "seed": 3},
               image=MEDIA / "case-3-reference.png")  # the RGBA portrait
    assert b["position"] == a["position"] + 1
    worker.send({"op": "submit", "id": "q3", "job_dir": str(work / "q1"), "image": str(MEDIA / "case-1-reference.png"),
                 "audio": str(audio[2]), "params": SHORT_PARAMS})
    err = worker.until(lambda m: m.get("id") == "q3")[-1]
    assert err["type"] == "error" and err["category"] == "busy" and "q1" in err["message"]
    worker.send({"op": "status"})
    status = worker.until(lambda m: m["type"] == "status")[-1]
    assert status["queue"][-2:] == ["q1", "q2"]

    err = worker.terminal("oom")[-1]
    assert err["type"] == "error" and err["category"] == "out_of_memory", err
    assert "model_offload" in err["hint"] and err["suggest"]["memory_mode"] == "model_offload"
    assert err["resumable"] and Path(err["traceback"]).is_file()
    assert worker.terminal("q1")[-1]["type"] == "done"
    events = worker.terminal("q2")
    assert events[-1]["type"] == "done" and events[-1]["frames"] == 50  # 2 s at 25 fps
    assert any(m["type"] == "progress" and m["id"] == "q2" for m in events)


def test_cancel_takes_effect_within_one_step_and_the_queue_goes_on(worker, ready, work, audio):
    submit(worker, "c1", work / "c1", audio[4], REF_PARAMS)
    submit(worker, "c2", work / "c2", audio[2], SHORT_PARAMS)
    assert submit(worker, "c3", work / "c3", audio[2], SHORT_PARAMS)["position"] == 2
    worker.send({"op": "cancel", "id": "c3"})  # queued: cancelled at once
    msg = worker.until(lambda m: m.get("id") == "c3" and m["type"] != "progress")[-1]
    assert msg["type"] == "cancelled" and msg["resumable"] is False
    worker.until(mid_denoise(1))
    worker.send({"op": "cancel", "id": "c1"})
    after = worker.terminal("c1")
    assert after[-1]["type"] == "cancelled" and after[-1]["reason"] == "cancel" and after[-1]["resumable"]
    windows = [m for m in after if m["type"] == "progress" and m["id"] == "c1" and m["phase"] == "denoise"]
    assert len(windows) <= 2, f"{len(windows)} window forwards ran after cancel (one step = 2)"
    assert 1 <= state_step(work / "c1" / "state.safetensors") < REF_PARAMS["steps"]
    assert lock_is_free(work / "c1")
    assert worker.terminal("c2")[-1]["type"] == "done"


def test_bad_requests_get_errors_and_the_worker_survives(worker, ready, work, audio):
    image = str(MEDIA / "case-1-reference.png")
    cases = [
        (b"{this is not json\n", "bad_request", "malformed JSON"),
        ({"op": "explode"}, "bad_request", "unknown op"),
        ({"protocol": 1}, "bad_request", "missing field 'op'"),
        ({"op": "submit", "image": image}, "bad_request", "missing field 'job_dir'"),
        ({"op": "submit", "job_dir": str(work / "e1"), "image": image}, "bad_request", "missing field 'audio'"),
        ({"op": "submit", "job_dir": str(work / "e2")}, "bad_request", "no job.json"),
        ({"op": "cancel"}, "bad_request", "missing field 'id'"),
        ({"op": "cancel", "id": "nobody"}, "bad_request", "no running or queued job"),  # id null, ref set
        (b'{"op": "status", "pad": "' + b"x" * (1 << 20) + b'"}\n', "bad_request", "exceeds the limit"),
        ({"op": "submit", "job_dir": str(work / "e3"), "image": "/nonexistent/face.png", "audio": str(audio[2])},
         "bad_input", "/nonexistent/face.png"),
        ({"op": "submit", "job_dir": str(work / "e4"), "image": image, "audio": str(work / "missing.wav")},
         "bad_input", "missing.wav"),
        ({"op": "submit", "job_dir": str(work / "e5"), "image": image, "audio": str(audio[2]),
          "params": {"width": 65}}, "bad_input", "multiple of 16"),
        ({"op": "submit", "job_dir": str(work / "e6"), "image": image, "audio": str(audio[2]),
          "params": {"colour": "red"}}, "bad_input", "unknown generation parameter"),
        ({"op": "submit", "job_dir": str(work / "e8"), "image": image, "audio": str(audio[2]),
          "params": {"allow_silent": "false"}}, "bad_input", "must be a boolean"),  # strict JSON types
        ({"op": "submit", "job_dir": str(work / "e9"), "image": image, "audio": str(audio[2]),
          "params": {"steps": "2"}}, "bad_input", "must be an integer"),
        ({"op": "submit", "job_dir": str(work / "e10"), "image": image, "audio": str(audio[2]),
          "params": {"shift": 0.5}}, "bad_input", "shift 0.5 is out of range"),
        ({"op": "submit", "job_dir": str(work / "e7"), "image": str(audio[2]), "audio": str(audio[2])},
         "bad_input", ""),  # a WAV passed as the image
    ]
    for request, category, fragment in cases:
        worker.send(request)
        err = worker.until(lambda m: m["type"] in ("error", "accepted"))[-1]
        assert err["type"] == "error", (request if isinstance(request, dict) else request[:40], err)
        assert err["category"] == category and fragment in err["message"], (request, err)
        assert {"id", "message", "hint", "traceback"} <= set(err) and "\n" not in err["message"]
    worker.send({"op": "cancel", "id": "nobody"})
    err = worker.until(lambda m: m["type"] == "error")[-1]
    assert err["id"] is None and err["ref"] == "nobody"  # a failed cancel must not fail that job in a client
    worker.send({"op": "status"})
    status = worker.until(lambda m: m["type"] == "status")[-1]
    assert status["running"] is None and status["queue"] == []
    assert not (work / "e3").exists()  # a rejected submit leaves nothing behind


def test_random_seed_is_drawn_once_recorded_and_kept_with_the_client_record(worker, ready, work, audio):
    params = {**SHORT_PARAMS, "seed": -1}
    client = {"placement": {"scene": "Scene", "source": "voice", "frame_start": 10}}
    first = submit(worker, "s1", work / "s1", audio[2], params, client=client)
    assert isinstance(first["seed"], int) and 0 <= first["seed"] < 2**31
    assert worker.terminal("s1")[-1]["type"] == "done"
    record = json.loads((work / "s1" / "job.json").read_text())
    assert record["params"]["seed"] == first["seed"] and record["params_requested"]["seed"] == -1
    assert record["client"] == client and record["params"]["steps"] == SHORT_PARAMS["steps"]
    manifest = json.loads((work / "s1" / "manifest.json").read_text())
    assert manifest["seed"] == first["seed"]
    again = submit(worker, "s2", work / "s1", audio[2], params)  # the same request: the same take, same seed
    assert again["seed"] == first["seed"]
    assert worker.terminal("s2")[-1]["type"] == "done"
    assert json.loads((work / "s1" / "job.json").read_text())["client"] == client  # kept when not resent
    other = submit(worker, "s3", work / "s3", audio[2], params)
    assert other["seed"] != first["seed"]  # a new job draws anew (a 1 in 2^31 chance of a false failure)
    assert worker.terminal("s3")[-1]["type"] == "done"


def test_kill_9_mid_denoise_then_resume_by_submit_and_by_cli(work, audio, reference):
    assert reference[1][-1]["type"] == "done"
    job = work / "killed"
    w = Serve(work)
    try:
        assert w.next()["type"] == "ready"
        submit(w, "k", job, audio[4], REF_PARAMS)
        w.until(mid_denoise(2))
        w.proc.kill()  # SIGKILL: no handler runs, the lock is left behind
        w.proc.wait(timeout=30)
    finally:
        w.stop()
    step = state_step(job / "state.safetensors")
    assert 2 <= step < REF_PARAMS["steps"], step
    copy = work / "killed-copy"
    shutil.copytree(job, copy)  # the same crashed state, resumed from the shell below

    w = Serve(work)
    try:
        assert w.next()["type"] == "ready"
        w.send({"op": "submit", "id": "k2", "job_dir": str(job)})  # job.json is enough to resume
        events = w.until(lambda m: m.get("id") == "k2" and m["type"] in ("accepted", "error"))
        assert events[-1]["type"] == "accepted" and events[-1]["resumed"] is True, events[-1]
        assert events[-1]["from_step"] == step
        events = w.terminal("k2")
        assert events[-1]["type"] == "done", events[-1]
        first = next(m for m in events if m["type"] == "progress" and m["phase"] == "denoise")
        assert first["step"] >= step  # continued, not restarted
        assert_same_frames(job, reference[2])
        close_stdin_mid_denoise(w, work / "stdin-closed", audio)
    finally:
        w.stop()

    out = subprocess.run([sys.executable, "-m", "stableavatar", "resume", str(copy), "--log-dir", str(work / "logs")],
                         capture_output=True, text=True, timeout=WAIT, cwd=work, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["frames"] == 100
    assert_same_frames(copy, reference[2])
    assert not (copy / "state.safetensors").exists()


def close_stdin_mid_denoise(w: Serve, job: Path, audio) -> None:
    """Closing stdin mid-denoise: the worker cancels at the next window, answers bye, exits 0 and leaves a
    resumable checkpoint behind, with the lock released."""
    submit(w, "s", job, audio[4], REF_PARAMS)
    w.until(mid_denoise(1))
    w.proc.stdin.close()
    events = w.until(lambda m: m["type"] == "bye")
    cancelled = [m for m in events if m["type"] == "cancelled" and m["id"] == "s"]
    assert cancelled and cancelled[0]["reason"] == "shutdown" and cancelled[0]["resumable"]
    assert w.proc.wait(timeout=30) == 0
    assert 1 <= state_step(job / "state.safetensors") < REF_PARAMS["steps"]
    assert lock_is_free(job)


def test_stdin_closed_checkpoint_resumes_identically(worker, work, reference):
    job = work / "stdin-closed"
    if not (job / "state.safetensors").exists():
        pytest.skip("needs the checkpoint left by the stdin-close step of the kill test")
    worker.send({"op": "submit", "id": "s2", "job_dir": str(job)})
    assert worker.until(lambda m: m.get("id") == "s2")[-1]["resumed"] is True
    assert worker.terminal("s2")[-1]["type"] == "done"
    assert_same_frames(job, reference[2])


def test_sigterm_mid_denoise_checkpoints_and_exits_cleanly(worker, work, audio):
    job = work / "sigterm"
    submit(worker, "t", job, audio[4], REF_PARAMS)
    worker.until(mid_denoise(1))
    worker.proc.send_signal(signal.SIGTERM)
    events = worker.until(lambda m: m["type"] == "bye")
    cancelled = [m for m in events if m["type"] == "cancelled" and m["id"] == "t"]
    assert cancelled and cancelled[0]["reason"] == "shutdown" and cancelled[0]["resumable"]
    assert events[-1]["reason"] == "SIGTERM"
    assert worker.proc.wait(timeout=30) == 0
    assert worker.next() is None  # stdout closed after bye
    assert 1 <= state_step(job / "state.safetensors") < REF_PARAMS["steps"] and lock_is_free(job)


def test_missing_weights_are_reported_with_the_folder_and_how_to_download(tmp_path, audio):
    empty = tmp_path / "no-weights"
    empty.mkdir()
    w = Serve(tmp_path, checkpoints=empty)
    try:
        ready = w.next()
        assert ready["type"] == "ready" and ready["weights"]["found"] is False
        assert str(empty) in ready["weights"]["error"]
        w.send({"op": "submit", "id": "m", "job_dir": str(tmp_path / "job"), "image": str(MEDIA / "case-1-reference.png"),
                "audio": str(audio[2]), "params": SHORT_PARAMS})
        err = w.until(lambda m: m.get("id") == "m")[-1]
        assert err["type"] == "error" and err["category"] == "missing_weights"
        assert str(empty) in err["message"] and "download" in err["hint"]
        w.send({"op": "status"})
        assert w.until(lambda m: m["type"] == "status")[-1]["engine_loaded"] is False
    finally:
        w.stop()
    assert w.proc.returncode == 0
