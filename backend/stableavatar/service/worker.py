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
import time
import traceback
import uuid

from .. import contract, errors, oom, report, settings
from ..checkpoints import weights_report
from ..cli_args import engine_settings_from_args
from ..contract import ContractError
from ..errors import BusyError, CancelledError, StableAvatarError
from ..job import prepare_job
from . import admission, jobs_root, logs, runner, transfer
from .stdio import claim_stdio
from .gpu_release import Releaser
from .jobdir import JobDir, JobLockedError

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
        self.releaser = Releaser(getattr(args, "idle_release", 0))
        self.jobs_root = jobs_root.from_args(args)  # remote use: no path outside it (service/jobs_root.py)

    # ---- output -------------------------------------------------------------------------------------------
    def emit(self, msg: dict) -> None:
        if msg.get("type") == "progress":
            self.last_progress = msg
        data = contract.encode(msg)
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
                                      memory_mode=a.memory_mode, devices=a.devices or 1)
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
            if not errors.describe(exc).bug:  # an unreadable drive, no space: told as such, not as a bug
                raise exc
            raise StableAvatarError(f"the engine failed to load: {type(exc).__name__}: {exc}",
                                    hint="see the worker log; restart the backend") from exc
        return self.engine

    @property
    def memory_mode(self) -> str:
        """The mode jobs run in: the engine's ("auto" resolved) once loaded, else the requested one."""
        return self.engine.memory_mode if self.engine is not None else self.args.memory_mode

    def ready_message(self) -> dict:
        a = self.args
        fields = {"pid": os.getpid(), "capabilities": contract.capabilities(),
                  "limits": {"max_line_bytes": contract.MAX_LINE_BYTES},
                  "jobs_root": str(self.jobs_root) if self.jobs_root else None}
        if self.engine is not None:
            info = self.engine.info()
            return contract.event("ready", versions=info.get("versions"), device=info.get("device"),
                                  dtype=info.get("dtype"), gpu=info.get("gpu"), weights=info.get("weights"),
                                  memory_mode=self.memory_mode, **fields)
        exc = self.load_error
        weights = weights_report(a.checkpoints, exc)
        told = errors.describe(exc) if exc else None
        engine_error = {"category": told.category, "message": told.message, "hint": told.hint} if exc else None
        return contract.event("ready", versions=report.versions(), device=a.device, dtype=a.dtype, gpu=report.gpu(),
                              weights=weights, memory_mode=a.memory_mode, engine_error=engine_error, **fields)

    def worker_settings(self) -> dict:
        a = self.args
        path = a.checkpoints
        if self.engine is not None:
            path = (self.engine.info().get("weights") or {}).get("path") or path
        return {"checkpoints": str(path) if path else None, "transformer": a.transformer, "device": a.device,
                "dtype": a.dtype, "memory_mode": a.memory_mode,  # as requested: a resume re-resolves "auto"
                "devices": a.devices}

    # ---- reader thread ------------------------------------------------------------------------------------
    def reader(self) -> None:
        """Answer request lines until EOF, `shutdown` or a signal. It outlives any line: whatever a line holds
        (bytes, JSON, values that make an op raise), it is answered with an error and the next line is read;
        when the reader ends for any reason, the worker stops (a deaf worker would never exit)."""
        try:
            while not self.stopping:
                try:
                    raw = contract.read_line(self._in)
                except (OSError, ValueError):
                    break
                if raw is None:
                    break
                try:
                    self.answer(raw)
                except Exception:  # noqa: BLE001 - the last resort: answering failed, the reader lives on
                    log.exception("could not answer a request line")
                    self.emit(contract.error_event("bad_request", "the request line could not be answered",
                                                   hint="this is a bug; the worker keeps serving"))
        finally:
            self.request_stop("stdin closed")

    def answer(self, raw) -> None:
        """One request line -> its op, or an `error` event saying why not."""
        if isinstance(raw, contract.LineTooLong):
            self.emit(contract.error_event("bad_request", f"line of {raw.size} bytes exceeds the limit of "
                                           f"{contract.MAX_LINE_BYTES} bytes", hint="requests carry paths, "
                                           "not data"))
            return
        if not raw.strip():
            return
        cmd = None
        try:
            cmd = contract.parse_request(raw)
            getattr(self, "op_" + cmd["op"])(cmd)
        except ContractError as exc:
            job_id = exc.id if exc.category == "bad_request" else _cmd_id(cmd)
            self.emit(contract.error_event(exc.category, exc.message, id=job_id, hint=exc.hint,
                                           op=exc.op or (cmd and cmd.get("op")),
                                           **({"ref": exc.ref} if exc.ref else {})))
        except Exception as exc:  # noqa: BLE001 - a bug answering one request must not kill the worker
            failure = errors.describe(exc)
            path = self._write_traceback(None) if failure.bug else None
            self.emit(contract.error_event(failure.category, failure.message, id=_cmd_id(cmd),
                                           hint="this is a bug; the worker keeps serving" if failure.bug
                                           else failure.hint, traceback=path, op=cmd and cmd.get("op")))

    def op_status(self, cmd) -> None:
        with self._cv:
            self.emit(contract.event("status", running=self.running.id if self.running else None,
                                     queue=[j.id for j in self.queue],
                                     progress=_strip(self.last_progress) if self.running else None,
                                     memory_mode=self.memory_mode, engine_loaded=self.engine is not None))

    def op_shutdown(self, cmd) -> None:
        self.request_stop("shutdown requested")

    def op_release(self, cmd) -> None:
        with self._cv:  # torch lives on the main thread: it releases as soon as no job runs
            self.releaser.requested = True
            self._cv.notify_all()

    def op_cancel(self, cmd) -> None:
        job_id = cmd["id"]
        with self._cv:
            if self.running and self.running.id == job_id:
                self.running.cancel = True  # the main thread answers `cancelled` when generate stops
                log.info("job %s: cancel requested", job_id)
                return
            job = next((j for j in self.queue if j.id == job_id), None)
            if job is None:
                raise ContractError(f"cancel: no running or queued job with id {job_id!r}", op="cancel",
                                    ref=job_id, hint="it may have finished already", category="bad_request")
            self.queue.remove(job)
        job.lock.release()
        self.emit(contract.event("cancelled", id=job_id, resumable=job.jd.has_checkpoint(), reason="cancel"))

    def op_transfer(self, cmd) -> None:  # put, fetch, files (service/transfer.py): answered in order
        self.emit(transfer.answer(self.jobs_root, cmd))

    op_put = op_fetch = op_files = op_transfer

    def op_submit(self, cmd) -> None:
        if self.stopping:
            raise BusyError("the worker is shutting down", hint="start a new worker and submit again")
        cmd = self.jobs_root.confine_submit(cmd) if self.jobs_root else cmd
        job_id = cmd.get("id") or f"job-{uuid.uuid4().hex[:10]}"
        jd = JobDir(cmd["job_dir"])
        with self._cv:
            active = ([self.running] if self.running else []) + list(self.queue)
        if any(j.id == job_id for j in active):
            raise ContractError(f"submit: a job with id {job_id!r} is already queued or running", op="submit",
                                ref=job_id, category="bad_request")  # not id: that job is unaffected
        for j in active:
            if j.jd.path == jd.path:
                err = JobLockedError(jd.path, os.getpid())
                err.message = f"job directory {jd.path} is already queued or running in this worker as {j.id}"
                raise err
        sub = admission.read_submit(cmd, jd, job_id)
        engine = self.ensure_engine()
        # validate now, before the job is queued; it runs later from job.json (runner.run)
        prepared = prepare_job(sub.image, sub.audio, sub.params)
        fingerprint, parts = engine.fingerprint(prepared), engine.fingerprint_parts(prepared)
        jd.check_ours(sub.image, sub.audio)  # never write into a folder holding files that are not ours
        lock = jd.lock()
        try:
            req, resumed = jd.prepare_request(sub.image, sub.audio, sub.params.to_dict(), job_id,
                                              self.worker_settings(), client=sub.client, requested=sub.requested)
            meta = jd.checkpoint_meta() if resumed else {}
            admission.check_checkpoint(jd, req, meta, fingerprint, parts)
        except BaseException:
            lock.release()
            raise
        fault = cmd.get("fault") if os.environ.get(FAULTS_ENV) == "1" else None
        job = Job(job_id, jd, req, lock, resumed, fault)
        with self._cv:
            position = (1 if self.running else 0) + len(self.queue)
            # emitted before the job is visible to the main thread, so `accepted` precedes its progress
            self.emit(contract.event("accepted", id=job_id, job_dir=str(jd.path), position=position,
                                     resumed=resumed, from_step=_int(meta.get("step")) if resumed else None,
                                     seed=req["params"]["seed"]))
            self.queue.append(job)
            self._cv.notify_all()
        log.info("job %s: accepted (%s, position %d, resumed=%s)", job_id, jd.path, position, resumed)

    # ---- main thread --------------------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        idle_since = time.monotonic()
        with self._cv:
            while not self.queue and not self.stopping:
                self._cv.wait(0.2)  # bounded: a signal handler sets `stopping` without notifying
                reason = self.releaser.due(self.engine, idle_since)
                if reason:
                    self.releaser.release(self.engine, self.emit, reason)
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
            return contract.event("cancelled", id=job.id, resumable=resumable, reason=reason)
        if oom.is_oom(exc):
            path = self._write_traceback(job.jd)
            log.error("job %s: out of memory: %s", job.id, exc)
            exc.__traceback__ = None  # the traceback pins the frames that hold the failed job's tensors
            del exc
            oom.release()
            p, mode = job.req["params"], self.memory_mode
            return contract.error_event("out_of_memory", f"out of memory at {p['width']}x{p['height']} in memory "
                                        f"mode {mode}", id=job.id, hint=oom.hint(mode, p["width"], p["height"]),
                                        traceback=path, suggest=oom.suggestion(mode, p["width"], p["height"]),
                                        resumable=resumable)
        failure = errors.describe(exc)
        path = None
        if failure.bug:
            path = self._write_traceback(job.jd)
            log.error("job %s: internal error", job.id, exc_info=exc)
        else:
            log.error("job %s: %s (%s)", job.id, failure.message, failure.category)
        hint = f"this is a bug; please report it with {path}" if failure.bug else failure.hint
        return contract.error_event(failure.category, failure.message, id=job.id, hint=hint, traceback=path,
                                    resumable=resumable)

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
            self.emit(contract.event("cancelled", id=job.id, resumable=True, reason="shutdown"))

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
        if self.engine is not None:
            self.engine.close()  # the other ranks of a multi-device engine
        log.info("worker exits (%s)", self.stop_reason)
        self.emit(contract.event("bye", reason=self.stop_reason))
        return 0


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


def main(args) -> int:
    """Entry of `serve --stdio`. Exits the process with os._exit: the reader thread may sit in a blocking read,
    and interpreter shutdown with a daemon thread holding a buffered stream's lock can abort."""
    proto_in, proto_out = claim_stdio()
    args.log_dir_resolved = logs.setup(args.log_dir)
    resolved = settings.resolve(engine_settings_from_args(args))
    args.device, args.dtype, args.memory_mode = resolved.device, resolved.dtype, resolved.memory_mode
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
