"""The shot farm on a real local Ray cluster (`ray start --head`, CPU only, 2 slots), started by this module and
torn down by its session id even when a test fails. Real `stableavatar farm` processes, real actors, real kills.

* 3 good shots + 1 bad one on 2 runners: the runner of one shot is killed -9 mid-denoise; Ray restarts it, the
  shot resumes from its job folder's checkpoint and its frames are byte-identical to an uninterrupted twin; the
  bad shot fails alone with its own one-line error.
* `farm submit` returns at once; `farm status` lists the shots; `farm cancel` stops them within a step.
* The add-on's farm client (blender_addon/farm.py) drives the same cluster through the CLI: path mapping, rows
  moved by the streamed events, the result found where this machine sees it.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import MEDIA, REPO, TINY
from ray_cluster import RAY_ENV, local_cluster

pytest.importorskip("ray", reason="the farm extra (pip install '.[farm]') is not installed")
pytestmark = pytest.mark.timeout(600)

ENV = {**os.environ, **RAY_ENV,
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "backend"), os.environ.get("PYTHONPATH")]))}
IMAGE = MEDIA / "case-1-reference.png"
WAIT = 240


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with local_cluster(sys.executable, tmp_path_factory.mktemp("ray") / "ray.log", ENV) as address:
        yield address


def farm(*args, address: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stableavatar", "farm", *map(str, args), "--address", address],
                          capture_output=True, text=True, timeout=timeout, env=ENV)


ENGINE = ("--checkpoints", str(TINY), "--device", "cpu")


class Lines:
    """A `farm ... --json` process whose stdout lines are parsed on a thread, so every read has a deadline."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
        self.q: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:  # stdout must carry JSON lines only
                self.q.put({"type": "not-json", "line": line})
        self.q.put(None)

    def until(self, pred, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"nothing matched within {timeout}s; last {self.seen[-3:]}") from None
            assert msg is not None, f"farm exited ({self.proc.wait()}): {self.proc.stderr.read()[-3000:]}"
            assert msg["type"] != "not-json", msg
            self.seen.append(msg)
            if pred(msg):
                return msg


def _frames(job_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((job_dir / "frames").glob("*.png"))}


def test_backend_never_imports_ray_outside_the_farm():
    backend = REPO / "backend" / "stableavatar"
    for f in backend.rglob("*.py"):
        rel = f.relative_to(backend).as_posix()
        if rel in ("farm/runner_actor.py", "farm/manager.py", "farm/client.py"):
            continue
        assert "import ray" not in f.read_text(), rel
    code = ("import sys; import stableavatar.cli as c, stableavatar.engine, stableavatar.service.worker, "
            "stableavatar.window_parallel, stableavatar.rank_main; c.build_parser(); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_shots_on_two_runners_one_killed_mid_denoise_resumes_identically(cluster, speech_12s, tmp_path):
    params = {"width": 32, "height": 32, "steps": 20, "seed": 7}
    bad_image = tmp_path / "not-an-image.png"
    bad_image.write_text("this is not a PNG")
    twin = {"image": str(IMAGE), "audio": str(speech_12s), "params": params}
    shots = [{"id": "twin-a", "job_dir": str(tmp_path / "a"), **twin},
             {"id": "twin-b", "job_dir": str(tmp_path / "b"), **twin},
             {"id": "other", "job_dir": str(tmp_path / "c"), "image": str(IMAGE), "audio": str(speech_12s),
              "params": {**params, "steps": 2, "seed": 3}},
             {"id": "bad", "job_dir": str(tmp_path / "bad"), "image": str(bad_image), "audio": str(speech_12s),
              "params": params}]
    (tmp_path / "shots.json").write_text(json.dumps(shots))
    run = Lines([sys.executable, "-m", "stableavatar", "farm", "run", str(tmp_path / "shots.json"), "--address",
                 cluster, "--actors", "2", "--json", *ENGINE])
    try:
        started = run.until(lambda m: m["type"] == "shot" and m["id"] == "twin-a" and m["state"] == "running")
        run.until(lambda m: m["type"] == "progress" and m["id"] == "twin-a" and m["phase"] == "denoise"
                  and m["step"] >= 3)
        os.kill(started["pid"], signal.SIGKILL)
        again = run.until(lambda m: m["type"] == "shot" and m["id"] == "twin-a" and m["state"] == "running"
                          and m["attempt"] == 2)
        assert again["pid"] != started["pid"]
        summary = run.until(lambda m: m["type"] == "summary")
        assert run.proc.wait(30) == 1  # not every shot is done
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    by_id = {s["id"]: s for s in summary["shots"]}
    assert (summary["done"], summary["failed"], summary["cancelled"]) == (3, 1, 0), summary
    assert by_id["twin-a"]["attempts"] == 2 and by_id["twin-b"]["attempts"] == 1
    assert by_id["bad"]["category"] == "bad_input" and by_id["bad"]["message"], by_id["bad"]
    assert "resuming from checkpoint" in (tmp_path / "a" / "log").read_text()
    a, b = _frames(tmp_path / "a"), _frames(tmp_path / "b")
    assert len(a) == 312 and a == b, "the resumed shot differs from its uninterrupted twin"
    assert len(_frames(tmp_path / "c")) == 312
    progress = {m["id"] for m in run.seen if m["type"] == "progress"}
    assert {"twin-a", "twin-b", "other"} <= progress


def test_submit_returns_at_once_then_status_and_cancel(cluster, speech_12s, tmp_path):
    params = {"width": 32, "height": 32, "steps": 200, "seed": 1}
    shots = [{"id": f"long-{k}", "job_dir": str(tmp_path / f"long-{k}"), "image": str(IMAGE), "audio": str(speech_12s),
              "params": params} for k in range(3)]
    (tmp_path / "shots.json").write_text(json.dumps(shots))
    t0 = time.monotonic()
    r = farm("submit", tmp_path / "shots.json", "--actors", "2", "--json", *ENGINE, address=cluster)
    assert r.returncode == 0, r.stderr[-2000:]
    submitted = json.loads(r.stdout)
    assert submitted["shots"] == ["long-0", "long-1", "long-2"] and time.monotonic() - t0 < 60
    batch = submitted["batch"]

    deadline = time.monotonic() + WAIT
    while True:  # the first shot runs and reports progress; the third waits for a free runner
        r = farm("status", batch, "--json", address=cluster)
        assert r.returncode == 0, r.stderr[-2000:]
        shots_now = {s["id"]: s for s in json.loads(r.stdout)["shots"]}
        if (shots_now["long-0"].get("progress") or {}).get("step", 0) >= 1:  # a checkpoint exists
            break
        assert time.monotonic() < deadline, shots_now
        time.sleep(1)
    assert shots_now["long-2"]["state"] == "queued"

    r = farm("cancel", batch, "--json", address=cluster)
    assert r.returncode == 0, r.stderr[-2000:]
    answer = json.loads(r.stdout)
    assert "long-0" in answer["cancelling"] and "long-2" in answer["cancelled"]
    r = farm("status", batch, "--follow", "--json", address=cluster, timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["cancelled"] == 3, summary
    assert (tmp_path / "long-0" / "state.safetensors").is_file()  # cancelled mid-job: resumable
    r = farm("status", "no-such-batch", address=cluster)
    assert r.returncode == 2 and "no batch 'no-such-batch'" in r.stderr


def test_addon_farm_client_sends_rows_and_imports_where_this_machine_sees_them(cluster, speech_12s, tmp_path):
    """blender_addon/farm.py as Animate Shots uses it: inputs written into job folders under the shared folder
    (here seen through another path than the nodes use), one batch submitted through the CLI, the rows moved by
    the streamed events, the done event pointing at frames this machine can read."""
    import shutil
    from types import SimpleNamespace

    sys.path.insert(0, str(REPO))
    from blender_addon import farm as addon_farm
    from blender_addon import rows

    store = tmp_path / "store"  # the shared storage as the nodes mount it
    store.mkdir()
    view = tmp_path / "view"    # ... and as this machine sees it
    view.symlink_to(store)
    paths = addon_farm.PathMap(str(view), str(store))
    shots, table = [], {}
    for job_id, image in (("blender-ok", IMAGE), ("blender-bad", tmp_path / "broken.png")):
        if job_id == "blender-bad":
            image.write_bytes(b"\x89PNG broken")
        inputs = view / job_id / "inputs"
        inputs.mkdir(parents=True)
        shutil.copyfile(image, inputs / "reference.png")
        shutil.copyfile(speech_12s, inputs / "audio.wav")
        request = {"image": str(inputs / "reference.png"), "audio": str(inputs / "audio.wav"),
                   "params": {"width": 32, "height": 32, "steps": 2, "seed": 5}, "client": {"scene": "Scene"}}
        shots.append(addon_farm.shot_entry(job_id, str(view / job_id), request, paths))
        table[job_id] = SimpleNamespace(status=rows.QUEUED, message="", phase="", fraction=0.0, step=0, steps=0,
                                        window=0, windows=0, eta_s=-1.0, seed=-1, error_text="")
    assert shots[0]["job_dir"] == str(store / "blender-ok")
    events = queue.Queue()
    python = os.environ.get("STABLEAVATAR_BACKEND_PYTHON", sys.executable)
    client = addon_farm.FarmClient(python, cluster, list(ENGINE), paths, events, str(view / ".farm"))
    client.submit(shots)
    imported, batch = {}, None
    deadline = time.monotonic() + WAIT
    try:
        while any(r.status in rows.ACTIVE for r in table.values()):
            ev = events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert ev["_farm"]
            if ev["type"] == "farm_batch":
                batch = ev["batch"]
                continue
            row = table.get(ev.get("id"))
            if row is not None and rows.apply(row, ev) == rows.IMPORT:
                imported[ev["id"]] = ev
                row.status = rows.IMPORTED
    finally:
        client.stop()
    assert batch and set(imported) == {"blender-ok"}
    done = imported["blender-ok"]
    assert done["frames_dir"] == str(view / "blender-ok" / "frames")
    assert len(list(Path(done["frames_dir"]).glob("*.png"))) == 312
    assert table["blender-bad"].status == rows.ERROR and "bad_input" in table["blender-bad"].message


@pytest.mark.parametrize("case", ["unreachable", "empty", "twice", "no-job-dir"])
def test_bad_farm_input_gets_one_line_and_a_hint_without_touching_a_cluster(case, tmp_path):
    shots = {"empty": [], "twice": [{"job_dir": str(tmp_path / "j"), "image": "a.png", "audio": "a.wav"}] * 2,
             "no-job-dir": [{"image": "a.png", "audio": "a.wav"}],
             "unreachable": [{"job_dir": str(tmp_path / "j"), "image": "a.png", "audio": "a.wav"}]}[case]
    (tmp_path / "shots.json").write_text(json.dumps(shots))
    t0 = time.monotonic()
    r = farm("submit", tmp_path / "shots.json", address="127.0.0.1:1", timeout=60)  # nothing listens on port 1
    err = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert r.returncode == 2 and err[0].startswith("error:") and time.monotonic() - t0 < 30, r.stderr[-2000:]
    want = {"unreachable": "cannot reach the Ray cluster", "empty": "holds no shots",
            "twice": "repeats the id or job folder", "no-job-dir": "missing field 'job_dir'"}[case]
    assert want in err[0], err
