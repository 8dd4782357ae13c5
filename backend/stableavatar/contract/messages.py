"""Every request and event with its fields and JSON types, and the line framing both sides use."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from .facts import (COMPAT_MODES, FIT_MODES, GUIDANCE_MODES, MAX_LINE_BYTES, MEMORY_MODE_CHOICES,
                    OVERLAP_WEIGHTS, PHASES, PROTOCOL, RESOLUTION_MULTIPLE, RESOLUTION_PRESETS, TRANSFER_CHUNK_BYTES)
from .values import PARAMS, ContractError, Spec, is_text, json_repr, json_type

MAX_DEPTH = 32  # nesting of objects and arrays in one line; requests need 3 (a client record a few more)


# ---------------------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Field:
    name: str
    type: type                # str, int, float, bool, dict, list
    doc: str
    required: bool = True     # must be present (it may still be null when nullable)
    nullable: bool = False


@dataclass(frozen=True)
class Message:
    name: str
    doc: str
    fields: tuple[Field, ...] = ()

    def check(self, obj: dict, op: str | None = None, job_id: str | None = None, nonempty: bool = True) -> dict:
        """`obj` if its fields have their JSON types (unknown fields are ignored), else ContractError.
        nonempty: strings must hold more than white space (requests carry paths and ids)."""
        for f in self.fields:
            value = obj.get(f.name)
            if value is None:
                if f.required and not f.nullable:
                    raise ContractError(f"{self.name}: missing field {f.name!r}", category="bad_request", op=op,
                                        id=job_id)
                continue
            typ = (int, float) if f.type is float else f.type
            if not isinstance(value, typ) or isinstance(value, bool) and f.type is not bool or \
                    f.type is str and nonempty and not value.strip():
                want = "a non-empty string" if f.type is str else json_type(f.type)
                raise ContractError(f"{self.name}: field {f.name!r} must be {want}", category="bad_request", op=op,
                                    id=job_id)
            if f.type is float and not math.isfinite(value):
                raise ContractError(f"{self.name}: field {f.name!r} must be a finite number", category="bad_request",
                                    op=op, id=job_id)
        return obj


def _m(name, doc, *fields):
    return name, Message(name, doc, tuple(fields))


_ID = Field("id", str, "the job id")
_IN_ROOT = "the job folder: relative to the worker's jobs root, or absolute inside it"
TRANSFER_OPS = ("put", "fetch", "files")  # answered in the order asked, by `stored`, `chunk`, `files` or `error`
REQUESTS = dict([
    _m("submit", "queue a job (or resume the one stored in `job_dir`); answered by `accepted` or `error`",
       Field("job_dir", str, "the job folder (created if missing)"),
       Field("image", str, "the still (path); give image and audio, or neither to resume job_dir", required=False),
       Field("audio", str, "the voice (path)", required=False),
       Field("params", dict, "generation parameters (table below); omitted ones take their defaults",
             required=False),
       Field("id", str, "client-chosen job id (default: generated)", required=False),
       Field("client", dict, "opaque record of the client's own (e.g. where the result goes), stored in job.json",
             required=False),
       Field("fault", str, "tests only, with STABLEAVATAR_SERVICE_FAULTS=1: `oom@N` fails after step N",
             required=False)),
    _m("cancel", "stop a running job within one denoising step, or drop a queued one", _ID),
    _m("status", "report the running job, the queue and the last progress"),
    _m("shutdown", "checkpoint and cancel every job, answer `bye`, exit 0 (closing stdin or SIGTERM does the same)"),
    _m("release", "free the models' GPU and host memory once no job runs; they load again with the next job; "
                  "answered by `released`"),
    _m("put", "store part of a job input (workers with a jobs root only); answered by `stored`",
       Field("job_dir", str, _IN_ROOT), Field("path", str, "`inputs/<file name>`"),
       Field("size", int, "the whole file's size in bytes"),
       Field("sha256", str, "the whole file's sha256 (hex), checked when its last byte arrives"),
       Field("offset", int, "where `data` goes: at most the bytes already held (default 0)", required=False),
       Field("data", str, f"base64 of at most {TRANSFER_CHUNK_BYTES} bytes; omit it to ask how many bytes are held",
             required=False)),
    _m("fetch", "read part of a file of a job folder (workers with a jobs root only); answered by `chunk`",
       Field("job_dir", str, _IN_ROOT), Field("path", str, "the file inside the job folder, e.g. frames/000000.png"),
       Field("offset", int, "the first byte wanted (default 0)", required=False)),
    _m("files", "list a job folder (workers with a jobs root only); answered by `files`",
       Field("job_dir", str, _IN_ROOT)),
])

_JOB_DIR = Field("job_dir", str, "absolute job folder")
EVENTS = dict([
    _m("ready", "always the first line",
       Field("pid", int, "the worker's process id"),
       Field("versions", dict, "stableavatar, python, torch, diffusers, transformers, cuda"),
       Field("device", str, "the device jobs run on"),
       Field("dtype", str, "the model dtype"),
       Field("gpu", dict, "name, total_mb, free_mb (null without a GPU)", nullable=True),
       Field("weights", dict, "found, path, tiny, searched; when not found also error and hint"),
       Field("memory_mode", str, "the memory mode in use (auto resolved)"),
       Field("capabilities", dict, "protocol, ops, params (name -> type, default, choices, min, max), "
                                   "memory_modes, resolutions, resolution_multiple"),
       Field("limits", dict, "max_line_bytes"),
       Field("jobs_root", str, "the folder this worker is confined to (serve --jobs-root): every path a request "
                               "names must lie in it; null: not confined", required=False, nullable=True),
       Field("engine_error", dict, "category, message, hint: only when the models failed to load (the worker still "
                                   "serves and retries on each submit)", required=False)),
    _m("accepted", "a submit was validated and queued; precedes every other event of the job",
       _ID, _JOB_DIR,
       Field("position", int, "0 = runs now, n = n jobs ahead"),
       Field("resumed", bool, "the folder held a checkpoint of this same job"),
       Field("from_step", int, "completed steps in that checkpoint", nullable=True),
       Field("seed", int, "the seed the job runs with (drawn when the request said -1)")),
    _m("progress", "phase load, encode, denoise, decode, mux in this order; fraction never decreases",
       _ID, Field("phase", str, "one of " + ", ".join(PHASES)),
       Field("step", int, "completed denoising steps"), Field("steps", int, "denoising steps of the job"),
       Field("window", int, "windows completed in the current step"), Field("windows", int, "windows per step"),
       Field("fraction", float, "0..1 over the whole job"),
       Field("eta_s", float, "seconds left, from measured work (null until measured)", nullable=True),
       Field("frames_written", int, "frames decoded so far"), Field("frames_total", int, "frames of the video")),
    _m("preview", "a small JPEG of the newest decoded frame, replaced atomically; once per decoded chunk",
       _ID, Field("path", str, "JOB_DIR/preview.jpg (at most 256 px)"), Field("frame", int, "the frame it shows")),
    _m("done", "the job finished; the folder is unlocked when this arrives",
       _ID, _JOB_DIR, Field("frames_dir", str, "folder of 000000.png ..."), Field("frames", int, "frame count"),
       Field("video", str, "mp4 with the audio muxed", nullable=True), Field("manifest", str, "manifest.json")),
    _m("error", "a request or a job failed",
       Field("id", str, "the job this error decides (a rejected submit or a failed job); null otherwise",
             nullable=True),
       Field("category", str, "one of the categories below"), Field("message", str, "one line"),
       Field("hint", str, "what to do", nullable=True),
       Field("traceback", str, "path of the full traceback file", nullable=True),
       Field("ref", str, "the id a failed request named (its job is unaffected)", required=False),
       Field("op", str, "the op answered, for request errors", required=False, nullable=True),
       Field("resumable", bool, "job errors: a checkpoint exists", required=False),
       Field("suggest", dict, "out_of_memory: memory_mode, width, height that would fit better", required=False),
       Field("path", str, "put/fetch errors: the file the request named", required=False)),
    _m("cancelled", "the job stopped; submit the folder again to continue",
       _ID, Field("resumable", bool, "a checkpoint exists"), Field("reason", str, "cancel or shutdown")),
    _m("status", "answer to status",
       Field("running", str, "the running job's id", nullable=True), Field("queue", list, "queued ids in order"),
       Field("progress", dict, "the running job's last progress fields", nullable=True),
       Field("memory_mode", str, "the memory mode in use"), Field("engine_loaded", bool, "models are loaded")),
    _m("released", "the models were dropped and their memory freed (after `release`, or `serve --idle-release`)",
       Field("reason", str, "request or idle"), Field("was_loaded", bool, "models were loaded until now")),
    _m("bye", "the worker exits after this line", Field("reason", str, "shutdown requested, stdin closed, SIGTERM, ...")),
    _m("stored", "answer to put: how much of the file the worker holds",
       _JOB_DIR, Field("path", str, "as in the request"),
       Field("have", int, "bytes held: an interrupted upload continues from here"), Field("size", int, "of the file"),
       Field("complete", bool, "the whole file arrived, its sha256 matched and it is in place")),
    _m("chunk", "answer to fetch: bytes of a file",
       _JOB_DIR, Field("path", str, "as in the request"), Field("offset", int, "where `data` starts"),
       Field("data", str, "base64 (empty past the end)"), Field("size", int, "the file's size"),
       Field("sha256", str, "the whole file's sha256; another value than in the previous chunk means the file was "
                            "replaced meanwhile: fetch it again from 0"),
       Field("eof", bool, "this chunk ends the file")),
    _m("files", "answer to files",
       _JOB_DIR, Field("frames", list, "sizes of frames/000000.png, 000001.png, ... in order, up to the first gap"),
       Field("other", dict, "every other file (path inside the folder -> size), without temporary files and the lock"),
       Field("finished", bool, "manifest.json exists: the job is done"),
       Field("checkpoint_step", int, "completed steps in state.safetensors", nullable=True)),
])


# ---------------------------------------------------------------------------------------------- framing
def event(type_: str, **fields) -> dict:
    """A worker message (not validated here: tests check every emitted line against EVENTS)."""
    return {"protocol": PROTOCOL, "type": type_, **fields}


def error_event(category: str, message: str, *, id: str | None = None, hint: str | None = None,
                traceback: str | None = None, **extra) -> dict:
    one_line = " ".join(str(message).split()) or category  # documented as one line
    return event("error", id=id, category=category, message=one_line, hint=hint, traceback=traceback, **extra)


def request(op: str, **fields) -> dict:
    """A client message, checked against REQUESTS (a client bug fails here, not in the worker)."""
    if op not in REQUESTS:
        raise ContractError(f"unknown op {op!r}", hint=f"ops: {', '.join(REQUESTS)}", category="bad_request")
    msg = {"protocol": PROTOCOL, "op": op, **{k: v for k, v in fields.items() if v is not None}}
    REQUESTS[op].check(msg, op=op)
    return msg


def encode(msg: dict) -> bytes:
    """One line of UTF-8 JSON. JSON has no NaN/Infinity: such values (an ETA of inf) become null. Text that
    UTF-8 cannot hold (a lone surrogate quoted back from a request) is escaped as JSON \\u escapes."""
    text = json.dumps(_finite(msg), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    try:
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:
        return json.dumps(_finite(msg), ensure_ascii=True, separators=(",", ":"), allow_nan=False,
                          default=str).encode("ascii") + b"\n"


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _decode(raw: bytes | str, key: str, table: dict[str, Message]) -> dict:
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise ContractError(f"line is not UTF-8 ({exc.reason} at byte {exc.start})", category="bad_request") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            why = f"{exc.msg} at column {exc.colno}"
        else:  # nesting past the parser's stack, or an integer of thousands of digits
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:80]
        raise ContractError(f"malformed JSON: {why}", hint="send one JSON object per line",
                            category="bad_request") from None
    if not isinstance(obj, dict):
        raise ContractError(f"expected a JSON object, got {type(obj).__name__}", category="bad_request")
    _check_values(obj)
    name = obj.get(key)
    named = obj.get("id") if isinstance(obj.get("id"), str) else None
    job_id = named if name == "submit" else None
    op = name if isinstance(name, str) and key == "op" else None
    if obj.get("protocol", PROTOCOL) != PROTOCOL:
        raise ContractError(f"unsupported protocol version {json_repr(obj['protocol'])}", op=op,
                            hint=f"this side speaks protocol {PROTOCOL}", category="bad_request")
    if not isinstance(name, str):
        raise ContractError(f"missing field {key!r}", hint=f"{key}s: {', '.join(table)}", category="bad_request")
    if name not in table:
        raise ContractError(f"unknown {key} {name!r}", hint=f"{key}s: {', '.join(table)}", op=op, ref=named,
                            category="bad_request")
    return table[name].check(obj, op=op, job_id=job_id, nonempty=key == "op")


def _check_values(obj) -> None:
    """Every string in `obj` is text (no NUL, no lone surrogate: a JSON escape can encode both, and neither can
    be a path or be written back out as UTF-8), and nothing nests deeper than MAX_DEPTH. Iterative: a hostile
    line cannot exhaust the stack here."""
    todo = [(obj, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, dict):
            items = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str) and not is_text(value):
                raise ContractError("line holds a string that is not valid text (a NUL or a lone surrogate)",
                                    hint="send UTF-8 text; paths cannot hold NUL", category="bad_request")
            if isinstance(value, float) and not math.isfinite(value):
                raise ContractError("line holds a number that is not finite (NaN or Infinity are not JSON)",
                                    category="bad_request")
            continue
        if depth > MAX_DEPTH:
            raise ContractError(f"line nests objects or arrays deeper than {MAX_DEPTH} levels",
                                category="bad_request")
        todo += [(v, depth + 1) for v in items]


def parse_request(raw: bytes | str) -> dict:
    """A client line -> the validated request dict, or ContractError (category bad_request) with a precise reason."""
    return _decode(raw, "op", REQUESTS)


def parse_event(raw: bytes | str) -> dict:
    """A worker line -> the validated event dict, or ContractError."""
    return _decode(raw, "type", EVENTS)


class LineTooLong:
    """What read_line returns for a line over the limit (already drained up to its newline)."""

    def __init__(self, size: int):
        self.size = size


def read_line(stream, limit: int = MAX_LINE_BYTES):
    """One line from a binary stream: bytes without the newline, None at EOF, or LineTooLong (drained)."""
    line = stream.readline(limit + 1)
    if not line:
        return None
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) <= limit:
        return line  # the last line without a newline, then EOF
    size = len(line)
    while True:
        chunk = stream.readline(1 << 16)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return LineTooLong(size)


def capabilities() -> dict:
    """What `ready.capabilities` says: a client sends only parameters the worker knows, and checks the protocol."""
    def spec(s: Spec) -> dict:
        return {"type": s.type.__name__, "default": s.default, "choices": list(s.choices) if s.choices else None,
                "min": s.min, "max": s.max}
    return {"protocol": PROTOCOL, "ops": list(REQUESTS), "params": {n: spec(s) for n, s in PARAMS.items()},
            "memory_modes": list(MEMORY_MODE_CHOICES), "resolutions": list(RESOLUTION_PRESETS),
            "resolution_multiple": RESOLUTION_MULTIPLE, "guidance": list(GUIDANCE_MODES),
            "compat": list(COMPAT_MODES), "fit": list(FIT_MODES), "overlap_weights": list(OVERLAP_WEIGHTS)}
