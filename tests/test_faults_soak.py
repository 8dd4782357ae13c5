"""The soak: a queue of jobs on a real worker, struck by random cancels and `kill -9`s at random moments (a
seeded RNG, printed: STABLEAVATAR_FAULT_SEED replays a run), then resumed by submitting the folders again, until
every job is done. Every job must end with complete frames byte-identical to one uninterrupted run, no temporary
file left, no checkpoint left, the lock free."""
from __future__ import annotations

import os
import random

import pytest

from faults_kit import IMAGE, frames, partial_files, speech
from test_service import Serve, lock_is_free, submit

SEED = int(os.environ.get("STABLEAVATAR_FAULT_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)
PARAMS = {"width": 32, "height": 32, "steps": 4, "seed": 11}
JOBS = 4
ROUNDS = 6  # struck rounds; then a last round runs whatever is left to the end
pytestmark = pytest.mark.timeout(400)


def test_soak_random_cancels_and_kills_then_resume(tmp_path):
    print(f"soak seed {SEED} (STABLEAVATAR_FAULT_SEED={SEED} replays the plan)")
    rng = random.Random(SEED)
    voice = speech(tmp_path, 2.0)
    folders = {f"job{i}": tmp_path / f"job{i}" for i in range(JOBS)}
    done: set[str] = set()
    submitted: set[str] = set()
    reference = None
    strikes = []
    for rnd in range(ROUNDS + 1):
        w = Serve(tmp_path)
        try:
            assert w.next()["type"] == "ready"
            if reference is None:  # the uninterrupted run, on the first worker
                submit(w, "ref", tmp_path / "ref", voice, PARAMS, image=IMAGE)
                assert w.terminal("ref")[-1]["type"] == "done"
                reference = frames(tmp_path / "ref")
                assert len(reference) == 50
            todo = [j for j in folders if j not in done]
            for j in todo:  # first time the request, afterwards the folder alone (it resumes)
                tag = f"{j}-r{rnd}"
                if j in submitted:
                    w.send({"op": "submit", "id": tag, "job_dir": str(folders[j])})
                    assert w.until(lambda m: m.get("id") == tag and m["type"] in ("accepted", "error"))[-1][
                        "type"] == "accepted"
                else:
                    submit(w, tag, folders[j], voice, PARAMS, image=IMAGE)
                    submitted.add(j)
            action = rng.choice(["kill", "kill", "cancel", "term"]) if rnd < ROUNDS else "none"
            moment = rng.randint(1, 6 * len(todo))  # after this many events (progress, previews, ends)
            strikes.append((rnd, action, moment))
            left = {f"{j}-r{rnd}" for j in todo}
            seen = 0
            while left:
                msg = w.next()
                assert msg is not None, w.stderr_tail()
                seen += 1
                if msg.get("id") in left and msg["type"] in ("done", "error", "cancelled"):
                    assert msg["type"] != "error", msg
                    left.discard(msg["id"])
                    if msg["type"] == "done":
                        done.add(msg["id"].split("-")[0])
                if seen == moment and action == "kill":
                    w.proc.kill()  # SIGKILL: nothing runs, mid-step, mid-frame or mid-mux
                    w.proc.wait(timeout=30)
                    break
                if seen == moment and action == "term":
                    w.proc.terminate()  # SIGTERM: checkpoint, cancel everything, bye
                    w.until(lambda m: m["type"] == "bye", 60)
                    break
                if seen == moment and action == "cancel" and left:
                    w.send({"op": "cancel", "id": rng.choice(sorted(left))})
        finally:
            w.stop()
        if len(done) == JOBS:
            break
    print(f"strikes (round, action, after n events): {strikes}")
    assert done == set(folders), (done, strikes)
    for j, folder in folders.items():
        assert frames(folder) == reference, f"{j} differs from the uninterrupted run (seed {SEED})"
        assert not partial_files(folder) and not (folder / "state.safetensors").exists() and lock_is_free(folder)
