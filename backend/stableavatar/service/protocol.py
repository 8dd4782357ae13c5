"""Protocol version 1: one JSON object per line in each direction (docs/protocol.md).

Pure functions, no torch: the Blender add-on's tests can import this module to build and check messages.
"""
from __future__ import annotations

import json
import math

PROTOCOL = 1
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; anything near this is a client bug, not a job

# op -> required fields and their JSON types; optional fields are checked in OPTIONAL.
REQUIRED = {
    "submit": {"job_dir": str},
    "cancel": {"id": str},
    "status": {},
    "shutdown": {},
}
OPTIONAL = {
    "submit": {"image": str, "audio": str, "params": dict, "id": str},
}
ERROR_CATEGORIES = ("bad_request", "bad_input", "missing_weights", "out_of_memory", "busy", "internal")


class ProtocolError(Exception):
    """A line that is not a valid client message: answered with an `error` of category bad_request."""

    category = "bad_request"

    def __init__(self, message: str, hint: str | None = None, op: str | None = None, id: str | None = None,
                 ref: str | None = None):
        super().__init__(message)
        # id: the job this error decides (a rejected submit); ref: an id the request named but whose job is
        # unaffected (cancel of an unknown id) - a client must not mark that job failed.
        self.message, self.hint, self.op, self.id, self.ref = message, hint, op, id, ref


class LineTooLong:
    """Sentinel returned by read_line for a line over the limit (already drained up to its newline)."""

    def __init__(self, size: int):
        self.size = size


def message(type_: str, **fields) -> dict:
    return {"protocol": PROTOCOL, "type": type_, **fields}


def error(category: str, message_: str, *, id: str | None = None, hint: str | None = None,
          traceback: str | None = None, **extra) -> dict:
    # The message is documented as one line: a multi-line exception text would break naive clients' UIs.
    one_line = " ".join(str(message_).split()) or category
    return message("error", id=id, category=category, message=one_line, hint=hint, traceback=traceback, **extra)


def _finite(obj):
    """JSON has no NaN/Infinity; an ETA of inf must not produce an unparsable line."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def encode(msg: dict) -> bytes:
    line = json.dumps(_finite(msg), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return line.encode("utf-8") + b"\n"


def decode(raw: bytes) -> dict:
    """Parse and validate one client line; raise ProtocolError with a precise one-line reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"line is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc.msg} at column {exc.colno}",
                            hint="send one JSON object per line") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"expected a JSON object, got {type(obj).__name__}")
    op = obj.get("op")
    named = obj.get("id") if isinstance(obj.get("id"), str) else None
    job_id = named if op == "submit" else None
    if "protocol" in obj and obj["protocol"] != PROTOCOL:
        raise ProtocolError(f"unsupported protocol version {obj['protocol']!r}", op=op if isinstance(op, str) else None,
                            hint=f"this worker speaks protocol {PROTOCOL}")
    if not isinstance(op, str):
        raise ProtocolError("missing field 'op'", hint=f"ops: {', '.join(REQUIRED)}")
    if op not in REQUIRED:
        raise ProtocolError(f"unknown op {op!r}", hint=f"ops: {', '.join(REQUIRED)}", op=op, ref=named)
    for name, typ in REQUIRED[op].items():
        if name not in obj or obj[name] is None:
            raise ProtocolError(f"{op}: missing field {name!r}", op=op, id=job_id)
        _check_type(op, name, obj[name], typ, job_id)
    for name, typ in OPTIONAL.get(op, {}).items():
        if obj.get(name) is not None:
            _check_type(op, name, obj[name], typ, job_id)
    return obj


def _check_type(op, name, value, typ, job_id):
    if not isinstance(value, typ) or (typ is str and not value.strip()):
        want = {str: "a non-empty string", dict: "an object"}[typ]
        raise ProtocolError(f"{op}: field {name!r} must be {want}", op=op, id=job_id)


def read_line(stream, limit: int = MAX_LINE_BYTES):
    """Read one line from a binary stream: bytes (without the newline), None at EOF, or LineTooLong after
    draining the oversize line so the next line parses normally."""
    line = stream.readline(limit + 1)
    if not line:
        return None
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) <= limit:
        return line  # last line without a newline, then EOF
    size = len(line)
    while True:
        chunk = stream.readline(1 << 16)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return LineTooLong(size)
