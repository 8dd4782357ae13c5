"""`stableavatar serve --stdio`: a warm worker that keeps the models loaded and runs one job at a time.

Threads: the reader thread parses stdin and answers control ops (submit validation, cancel, status, shutdown)
at once; the main thread runs jobs from a FIFO queue (torch stays on one thread). Signal handlers only set a
flag (taking a lock inside a handler can deadlock the thread it interrupted); the main thread polls it.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import sys
import threading
import traceback
import uuid

from ..errors import CancelledError, CheckpointError, StableAvatarError, UserInputError
from ..params import (COMPAT_MODES, FIT_MODES, GUIDANCE_MODES, MEMORY_MODE_CHOICES, OVERLAP_WEIGHTS,
                      RESOLUTION_PRESETS, GenerationParams)
from . import environment, logs, oom, protocol, runner
from .jobdir import JobDir, JobLockedError, existing_file

log = logging.getLogger("stableavatar.service")
FAULTS_ENV = "STABLEAVATAR_SERVICE_FAULTS"  # tests only: lets `submit` carry {"fault": "oom@N"}


class Job:
    def __init__(self, job_id: str, jd: JobDir, req: dict, lock, resumed: bool, fault: str | None):
        self.id, self.jd, self.req, self.lock, self.resumed, self.fault = job_id, jd, req, lock, resumed, fault
        self.cancel = False


class Worker:
    def __init__(self, args, proto_in, proto_out):
        self.args = args
        self._in, self._out = proto_in, proto_out
        self._out_lock = threading.Lock()
        self._cv = threading.Condition(threading.RLock())  # RLock: emit() under _cv may call request_stop()
        self.queue: collections.deque[Job] = collections.deque()
        self.running: Job | None = None
        self.last_progress: dict | None = None
        self.stopping = False
        self.stop_reason: str | None = None
        self.engine = None
        self.load_error: BaseException | None = None

    # ---- output -------------------------------------------------------------------------------------------
    def emit(self, msg: dict) -> None:
        if msg.get("type") == "progress":
            self.last_progress = msg
        data = protocol.encode(msg)
        with self._out_lock:
            try:
                self._out.write(data)
                self._out.flush()
            except (OSError, ValueError):  # client gone: same as stdin closing
                self.stopping, self.stop_reason = True, self.stop_reason or "stdout closed"

    def request_stop(self, reason: str) -> None:
        if not self.stopping:
            log.info("stopping: %s", reason)
        self.stopping, self.stop_reason = True, self.stop_reason or reason
        with self._cv:
            self._cv.notify_all()

    def _on_signal(self, signum, frame):  # runs on the main thread between bytecodes: set flags only
        self.stopping, self.stop_reason = True, self.stop_reason or signal.Signals(signum).name

    # ---- engine -------------------------------------------------------------------------------------------
    def load_engine(self) -> None:
        from ..engine import Engine
        a = self.args
        log.info("loading engine: checkpoints=%s device=%s dtype=%s memory_mode=%s", a.checkpoints, a.device,
                 a.dtype, a.memory_mode)
        try:
            self.engine = Engine.load(a.checkpoints, transformer=a.transformer, device=a.device, dtype=a.dtype,
                                      memory_mode=a.memory_mode)
            self.load_error = None
        except Exception as exc:  # noqa: BLE001 - reported in ready and on every submit, worker keeps serving
            log.error("engine load failed: %s", exc, exc_info=not isinstance(exc, StableAvatarError))
            self.engine, self.load_error = None, exc

    def ensure_engine(self):
        if self.engine is None:
            self.load_engine()  # weights may have been downloaded since start
        if self.engine is None:
            exc = self.load_error
            if isinstance(exc, StableAvatarError):
                raise exc
            raise StableAvatarError(f"the engine failed to load: {type(exc).__name__}: {exc}",
                                    hint="see the worker log; restart the backend") from exc
        return self.engine

    def ready_message(self) -> dict:
        a = self.args
        caps = {"guidance": list(GUIDANCE_MODES), "compat": list(COMPAT_MODES),
                "resolutions": list(RESOLUTION_PRESETS), "resolution_multiple": 16,
                "overlap_weights": list(OVERLAP_WEIGHTS), "fit": list(FIT_MODES),
                "memory_modes": list(MEMORY_MODE_CHOICES), "ops": list(protocol.REQUIRED)}
        fields = {"pid": os.getpid(), "capabilities": caps, "limits": {"max_line_bytes": protocol.MAX_LINE_BYTES}}
        if self.engine is not None:
            info = self.engine.info()
            return protocol.message("ready", versions=info.get("versions"), device=info.get("device"),
                                    dtype=info.get("dtype"), gpu=info.get("gpu"), weights=info.get("weights"),
                                    memory_mode=info.get("memory_mode", a.memory_mode), **fields)
        exc = self.load_error
        weights = {"found": not isinstance(exc, CheckpointError), "path": a.checkpoints, "tiny": False,
                   "searched": getattr(exc, "searched", None) or environment.searched_paths(a.checkpoints)}
        weights["error"] = str(exc) if exc else None
        weights["hint"] = getattr(exc, "hint", None)
        engine_error = {"category": getattr(exc, "category", "internal"), "message": " ".join(str(exc).split()),
                        "hint": getattr(exc, "hint", None)} if exc else None
        return protocol.message("ready", versions=environment.versions(), device=a.device, dtype=a.dtype,
                                gpu=environment.gpu(), weights=weights, memory_mode=a.memory_mode,
                                engine_error=engine_error, **fields)

    def worker_settings(self) -> dict:
        a = self.args
        path = a.checkpoints
        if self.engine is not None:
            path = (self.engine.info().get("weights") or {}).get("path") or path
        return {"checkpoints": str(path) if path else None, "transformer": a.transformer, "device": a.device,
                "dtype": a.dtype, "memory_mode": a.memory_mode}

    # ---- reader thread ------------------------------------------------------------------------------------
    def reader(self) -> None:
        while not self.stopping:
            try:
                raw = protocol.read_line(self._in)
            except (OSError, ValueError):
                break
            if raw is None:
                break
            if isinstance(raw, protocol.LineTooLong):
                self.emit(protocol.error("bad_request", f"line of {raw.size} bytes exceeds the limit of "
                                         f"{protocol.MAX_LINE_BYTES} bytes", hint="requests carry paths, not data"))
                continue
            if not raw.strip():
                continue
            cmd = None
            try:
                cmd = protocol.decode(raw)
                getattr(self, "op_" + cmd["op"])(cmd)
            except protocol.ProtocolError as exc:
                self.emit(protocol.error(exc.category, exc.message, id=exc.id, hint=exc.hint, op=exc.op,
                                         **({"ref": exc.ref} if exc.ref else {})))
            except StableAvatarError as exc:
                self.emit(protocol.error(exc.category, exc.message, id=_cmd_id(cmd), hint=exc.hint,
                                         op=cmd and cmd.get("op")))
            except Exception as exc:  # noqa: BLE001 - a bug answering one request must not kill the worker
                path = self._write_traceback(None)
                self.emit(protocol.error("internal", f"{type(exc).__name__}: {exc}", id=_cmd_id(cmd),
                                         hint="this is a bug; the worker keeps serving", traceback=path,
                                         op=cmd and cmd.get("op")))
        self.request_stop("stdin closed")

    def op_status(self, cmd) -> None:
        with self._cv:
            self.emit(protocol.message("status", running=self.running.id if self.running else None,
                                       queue=[j.id for j in self.queue],
                                       progress=_strip(self.last_progress) if self.running else None,
                                       memory_mode=self.args.memory_mode, engine_loaded=self.engine is not None))

    def op_shutdown(self, cmd) -> None:
        self.request_stop("shutdown requested")

    def op_cancel(self, cmd) -> None:
        job_id = cmd["id"]
        with self._cv:
            if self.running and self.running.id == job_id:
                self.running.cancel = True  # the main thread answers `cancelled` when generate stops
                log.info("job %s: cancel requested", job_id)
                return
            job = next((j for j in self.queue if j.id == job_id), None)
            if job is None:
                raise protocol.ProtocolError(f"cancel: no running or queued job with id {job_id!r}", op="cancel",
                                             ref=job_id, hint="it may have finished already")
            self.queue.remove(job)
        job.lock.release()
        self.emit(protocol.message("cancelled", id=job_id, resumable=job.jd.has_checkpoint(), reason="cancel"))

    def op_submit(self, cmd) -> None:
        if self.stopping:
            err = StableAvatarError("the worker is shutting down", hint="start a new worker and submit again")
            err.category = "busy"
            raise err
        job_id = cmd.get("id") or f"job-{uuid.uuid4().hex[:10]}"
        jd = JobDir(cmd["job_dir"])
        with self._cv:
            active = ([self.running] if self.running else []) + list(self.queue)
        if any(j.id == job_id for j in active):
            raise protocol.ProtocolError(f"submit: a job with id {job_id!r} is already queued or running",
                                         op="submit", ref=job_id)  # not id: that job is unaffected
        for j in active:
            if j.jd.path == jd.path:
                err = JobLockedError(jd.path, os.getpid())
                err.message = f"job directory {jd.path} is already queued or running in this worker as {j.id}"
                raise err
        image, audio = cmd.get("image"), cmd.get("audio")
        if (image is None) != (audio is None):
            raise protocol.ProtocolError(f"submit: missing field {'audio' if audio is None else 'image'!r}",
                                         op="submit", id=job_id, hint="give both image and audio, or neither to "
                                         "resume the job stored in job_dir")
        if image is None and not jd.has_request():
            raise protocol.ProtocolError("submit: missing fields 'image' and 'audio' (job_dir holds no job.json "
                                         "to resume)", op="submit", id=job_id)
        if image is not None:
            existing_file(image, "image"), existing_file(audio, "audio")
        params = cmd.get("params")
        if image is None:
            stored = jd.read_request()
            image, audio = stored["image"], stored["audio"]
            params = stored["params"] if params is None else params
        params = _normalise_params(params or {})
        engine = self.ensure_engine()
        from ..job import prepare_job
        # validate now, before the job is queued; it runs later from job.json (runner.run)
        fingerprint = engine.fingerprint(prepare_job(image, audio, GenerationParams.from_dict(params)))
        lock = jd.lock()
        try:
            req, resumed = jd.prepare_request(image, audio, params, job_id, self.worker_settings())
            meta = jd.checkpoint_meta() if resumed else {}
            stored = meta.get("fingerprint")
            if stored and fingerprint != stored:
                # same inputs and params, other weights/dtype: fail now, not after the job reaches the queue head
                was = req.get("worker") or {}
                raise UserInputError(
                    f"the checkpoint in {jd.path} was made by a worker with other settings",
                    hint=f"resume it with a worker started like the original (dtype {was.get('dtype')}, "
                         f"transformer {was.get('transformer') or 'default'}), or delete "
                         f"{jd.state.name} to start over")
        except BaseException:
            lock.release()
            raise
        fault = cmd.get("fault") if os.environ.get(FAULTS_ENV) == "1" else None
        job = Job(job_id, jd, req, lock, resumed, fault)
        with self._cv:
            position = (1 if self.running else 0) + len(self.queue)
            # emitted before the job is visible to the main thread, so `accepted` precedes its progress
            self.emit(protocol.message("accepted", id=job_id, job_dir=str(jd.path), position=position,
                                       resumed=resumed, from_step=_int(meta.get("step")) if resumed else None))
            self.queue.append(job)
            self._cv.notify_all()
        log.info("job %s: accepted (%s, position %d, resumed=%s)", job_id, jd.path, position, resumed)

    # ---- main thread --------------------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        with self._cv:
            while not self.queue and not self.stopping:
                self._cv.wait(0.2)  # bounded: a signal handler sets `stopping` without notifying
            if self.stopping:
                return None
            self.running = self.queue.popleft()
            self.last_progress = None
            return self.running

    def run_job(self, job: Job) -> None:
        with logs.job_log(job.jd.log):
            log.info("job %s: start (%s)", job.id, job.jd.path)
            try:
                result = runner.run(self.engine, job.jd, job.req, self.emit, lambda: job.cancel or self.stopping,
                                    checkpoint_interval_s=self.args.checkpoint_interval, fault=job.fault)
                final = runner.done_message(job.id, job.jd, result)
            except BaseException as exc:  # noqa: BLE001 - every failure becomes an event; the worker lives on
                final = self.report(job, exc)
            finally:
                job.lock.release()
                with self._cv:
                    self.running = None
        self.emit(final)  # last: a client reacting to it finds the job dir unlocked and the worker idle

    def report(self, job: Job, exc: BaseException) -> dict:
        """The terminal message for a job that did not finish."""
        resumable = job.jd.has_checkpoint()
        if isinstance(exc, CancelledError):
            reason = "cancel" if job.cancel else "shutdown"
            log.info("job %s: cancelled (%s)", job.id, reason)
            return protocol.message("cancelled", id=job.id, resumable=resumable, reason=reason)
        if oom.is_oom(exc):
            path = self._write_traceback(job.jd)
            log.error("job %s: out of memory: %s", job.id, exc)
            exc.__traceback__ = None  # the traceback pins the frames that hold the failed job's tensors
            del exc
            oom.release()
            p = job.req["params"]
            mode = self.args.memory_mode
            return protocol.error("out_of_memory", f"out of memory at {p['width']}x{p['height']} in memory mode "
                                  f"{mode}", id=job.id, hint=oom.hint(mode, p["width"], p["height"]),
                                  traceback=path, suggest=oom.suggestion(mode, p["width"], p["height"]),
                                  resumable=resumable)
        if isinstance(exc, StableAvatarError):
            log.error("job %s: %s (%s)", job.id, exc.message, exc.category)
            return protocol.error(exc.category, exc.message, id=job.id, hint=exc.hint, resumable=resumable)
        path = self._write_traceback(job.jd)
        log.error("job %s: internal error", job.id, exc_info=exc)
        return protocol.error("internal", f"{type(exc).__name__}: {exc}", id=job.id, traceback=path,
                              hint=f"this is a bug; please report it with {path}", resumable=resumable)

    def _write_traceback(self, jd: JobDir | None) -> str | None:
        text = traceback.format_exc()
        try:
            if jd is not None:
                path = jd.traceback
            else:
                path = self.args.log_dir_resolved / f"traceback-{os.getpid()}-{uuid.uuid4().hex[:6]}.txt"
            path.write_text(text, encoding="utf-8")
            return str(path)
        except OSError:
            log.error("could not write traceback:\n%s", text)
            return None

    def drain(self) -> None:
        """On shutdown: queued jobs keep their job.json (resubmit resumes them); release and report them."""
        with self._cv:
            pending, self.queue = list(self.queue), collections.deque()
        for job in pending:
            job.lock.release()
            self.emit(protocol.message("cancelled", id=job.id, resumable=True, reason="shutdown"))

    def serve(self) -> int:
        for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGBREAK"):
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self._on_signal)
        self.load_engine()
        self.emit(self.ready_message())
        threading.Thread(target=self.reader, name="stdin-reader", daemon=True).start()
        while True:
            job = self.next_job()
            if job is None:
                break
            self.run_job(job)
        self.drain()
        log.info("worker exits (%s)", self.stop_reason)
        self.emit(protocol.message("bye", reason=self.stop_reason))
        return 0


def _normalise_params(params: dict) -> dict:
    """Full, validated parameter dict; numbers in canonical types so an equal request compares equal."""
    if not isinstance(params, dict):
        raise UserInputError("params must be an object")
    p = GenerationParams.from_dict(params).validate().to_dict()
    for k in ("text_scale", "audio_scale"):
        p[k] = float(p[k])
    return p


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _strip(msg: dict | None) -> dict | None:
    return None if msg is None else {k: v for k, v in msg.items() if k not in ("protocol", "type")}


def _cmd_id(cmd) -> str | None:
    """The job a failed request decides: only a submit's own id (a failed cancel leaves its job alone)."""
    ok = isinstance(cmd, dict) and cmd.get("op") == "submit" and isinstance(cmd.get("id"), str)
    return cmd["id"] if ok else None


def claim_stdio():
    """Take private copies of stdin/stdout for the protocol, then point fds 0/1 at devnull/stderr so that no
    print(), C library or child process (ffmpeg) can read protocol input or write into protocol output."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto_in, proto_out


def main(args) -> int:
    """Entry of `serve --stdio`. Exits the process with os._exit: the reader thread may sit in a blocking read,
    and interpreter shutdown with a daemon thread holding a buffered stream's lock can abort."""
    proto_in, proto_out = claim_stdio()
    args.log_dir_resolved = logs.setup(args.log_dir)
    environment.resolve_device(args)
    rc = 1
    try:
        rc = Worker(args, proto_in, proto_out).serve()
    except BaseException:  # noqa: BLE001
        logging.getLogger("stableavatar.service").exception("worker crashed")
    finally:
        logging.shutdown()
        for f in (sys.stderr, proto_out):
            try:
                f.flush()
            except (OSError, ValueError):
                pass
        os._exit(rc)
