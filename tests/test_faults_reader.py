"""Fault class 2, hangs: a real worker is fed a generated corpus of hostile request lines (bytes that are not
UTF-8, JSON that cannot be re-encoded, lone surrogates and NULs in every field, nesting past the parser's stack,
numbers of thousands of digits, NaN, every wrong type). Every line gets exactly one answer (an error, or the
status it asked for), the worker keeps serving, and `shutdown`, the closing of stdin and SIGTERM all end it."""
from __future__ import annotations

import json
import os
import random
import signal

import pytest

from faults_kit import IMAGE, speech
from test_service import Serve

SEED = int(os.environ.get("STABLEAVATAR_FAULT_SEED", "20250901"))
FIELDS = ("op", "id", "job_dir", "image", "audio", "params", "client", "protocol", "fault")
POISON = ["\ud800", "\udfff", "a\ud83dz", "\u0000", "x\u0000/y", "", " ", "\n", "\u202e", "\ufeff", "..", "/",
          "/dev/zero", "/dev/stdin", "/proc/self/fd/0", "~", "é" * 300]
pytestmark = pytest.mark.timeout(300)


def _json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=True).encode()


def corpus(rng: random.Random, paths: dict) -> list[bytes]:
    """Hostile lines, none a valid job (the worker has no weights, so even a valid-looking submit errors)."""
    lines = [b"~" + rng.randbytes(rng.randint(1, 300)).replace(b"\n", b"?") for _ in range(40)]
    lines += [b'{"op": "status", "x": "' + rng.randbytes(rng.randint(1, 40)).replace(b"\n", b"?") + b'"}'
              for _ in range(15)]
    lines += [b"\xef\xbb\xbf" + _json({"op": "status"}), b"\x00" * 50, b"{" * 5000, b"[" * 200000,
              b'{"op":"status","a":' + b"[" * 100000 + b"]" * 100000 + b"}", b'{"op": "status"' + b" " * 1000,
              b'{"op":"submit","job_dir":"/tmp/x","params":{"steps":' + b"9" * 5000 + b"}}",
              b'{"op":"submit","job_dir":"/tmp/x","params":{"steps":1e999}}', b'{"op":"status","n":NaN}',
              b'{"op":"submit","job_dir":"/tmp/x","params":{"text_scale":-Infinity}}', b"null", b"true", b"42",
              b'"op"', b"[]", b'{"op": null}', b'{"op": ["submit"]}', b'{"op": {"op": "submit"}}',
              b'{"op": "submit", "job_dir": "/tmp/x"}', b'{"op": "cancel", "id": 5}', b'{"op": "shutdown", "protocol": 2}',
              b'{"op": "status", "protocol": 99999999999999999999}', b'{"op": "submit", "protocol": "1"}',
              b"{'op': 'status'}", b'{"op": "status"}{"op": "status"}', b"x" * ((1 << 20) + 10)]
    ops = ["submit", "cancel", "status", "shutdown", "SUBMIT", "submit ", "op_submit", "__init__", "reader"]
    for _ in range(160):
        msg = {"op": rng.choice(ops[:2] + ops[4:])}  # never a bare status or shutdown
        for f in rng.sample(FIELDS[1:], rng.randint(1, 5)):
            msg[f] = _value(rng, f, paths)
        if msg["op"] in ("submit", "cancel") and rng.random() < 0.5:
            msg[rng.choice(["id", "job_dir"])] = rng.choice(POISON)
        lines.append(_json(msg))
    return lines


def _value(rng: random.Random, field: str, paths: dict):
    kinds = [lambda: rng.choice(POISON), lambda: rng.randint(-2**70, 2**70), lambda: rng.random() * 1e308,
             lambda: None, lambda: rng.choice([True, False]), lambda: [rng.choice(POISON)] * rng.randint(0, 3),
             lambda: {rng.choice(POISON): rng.choice(POISON)}, lambda: _nested(rng.randint(20, 80)),
             lambda: rng.choice(list(paths.values())) + rng.choice(["", "\ud800", "\u0000", "/"])]
    if field == "params":
        kinds.append(lambda: {rng.choice(["width", "steps", "allow_silent", "prompt", "seed", "nope"]):
                              rng.choice(["false", 1e999 if rng.random() < 0.1 else 2**4000, "\ud800", [], {}, -1])})
    return rng.choice(kinds)()


def _nested(depth: int):
    v = "deep"
    for _ in range(depth):
        v = [v]
    return v


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    return {"image": str(IMAGE), "audio": str(speech(d)), "dir": str(d), "job": str(d / "job")}


def _worker(tmp):
    empty = tmp / "no-weights"
    empty.mkdir()
    w = Serve(tmp, checkpoints=empty)  # no models: starts in seconds; the reader is what is under test
    assert w.next()["type"] == "ready"
    return w


def _end(w: Serve) -> None:
    if w.proc.poll() is None:  # a deaf worker is what this file tests for: do not wait on it for long
        w.proc.kill()
        w.proc.wait(timeout=30)


def _answers_each_line(w: Serve, lines: list[bytes]) -> None:
    for i, line in enumerate(lines):
        w.send(line + b"\n")
        reply = w.next(timeout=15)
        assert reply is not None, f"line {i} ({line[:80]!r}) ended the worker:\n{w.stderr_tail()}"
        assert reply["type"] in ("error", "status"), (line[:80], reply)
        if reply["type"] == "error":
            assert reply["message"] and "\n" not in reply["message"], reply
            assert reply["category"] in ("bad_request", "bad_input", "missing_weights", "filesystem", "too_large")
        w.send(b"   \n")  # blank lines are skipped, unanswered


def test_hostile_corpus_every_line_answered_then_shutdown(tmp_path, paths):
    print(f"corpus seed {SEED} (STABLEAVATAR_FAULT_SEED to replay)")
    lines = corpus(random.Random(SEED), paths)
    w = _worker(tmp_path)
    try:
        _answers_each_line(w, lines)
        w.send({"op": "status"})
        status = w.until(lambda m: m["type"] == "status")[-1]
        assert status["running"] is None and status["queue"] == []
        w.send({"op": "shutdown"})
        assert w.until(lambda m: m["type"] == "bye", 30)[-1]["reason"] == "shutdown requested"
        assert w.proc.wait(timeout=30) == 0
    finally:
        _end(w)


@pytest.mark.parametrize("end", ["eof", "sigterm"])
def test_after_hostile_lines_eof_and_sigterm_end_the_worker(end, tmp_path, paths):
    rng = random.Random(SEED + 1)
    lines = [_json({"op": "submit", "id": "\ud800", "job_dir": "/tmp/\udc80x"}), _json({"op": "cancel", "id": "\udfff"}),
             _json({"op": "submit", "job_dir": paths["job"], "image": paths["image"] + "\ud800",
                    "audio": paths["audio"]}), b"[" * 100000, *rng.sample(corpus(rng, paths), 20)]
    w = _worker(tmp_path)
    try:
        _answers_each_line(w, lines)
        if end == "eof":
            w.proc.stdin.close()
        else:
            w.proc.send_signal(signal.SIGTERM)
        bye = w.until(lambda m: m["type"] == "bye", 30)[-1]
        assert bye["reason"] == ("stdin closed" if end == "eof" else "SIGTERM")
        assert w.proc.wait(timeout=30) == 0
    finally:
        _end(w)
