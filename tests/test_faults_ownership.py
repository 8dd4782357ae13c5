"""Fault class 1, user files destroyed: the backend writes only into folders it created or that carry its own
record, replaces or deletes only files it wrote, takes the job lock everywhere, and never mistakes one of its
temporary files for a frame. Every case hashes every file the user had before and after."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from faults_kit import IMAGE, assert_untouched, frame_names, generate, partial_files, snapshot, speech
from test_service import Serve, submit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return speech(tmp_path_factory.mktemp("voice"), 1.0)


def _pngs(d: Path, names) -> None:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        Image.new("RGB", (8, 8), (i * 40 % 255, 10, 200)).save(d / n)


# case -> (what the folder holds before, extra flags, exit code, fragment of the one error line; 0: succeeds)
def _user_frames(out):  # the user's own render in frames/, named like ours
    _pngs(out / "frames", ["000000.png", "000001.png", "000002.png", "holiday.png"])


def _user_notes(out):
    out.mkdir()
    (out / "notes.txt").write_text("my notes")


def _user_results(out):  # files with our result names that we did not write
    out.mkdir()
    (out / "video.mp4").write_bytes(b"my edit")
    (out / "manifest.json").write_text('{"mine": true}')
    _pngs(out / "frames", ["000007.png"])


def _symlinked_frames(out):  # frames/ is a link into the user's picture folder
    pictures = out.parent / "pictures"
    _pngs(pictures, ["a.png"])
    out.mkdir()
    os.symlink(pictures, out / "frames")


def _a_file(out):
    out.write_text("not a folder")


CASES = {
    "user PNGs in frames/": (_user_frames, [], 2, "did not write (frames/000000.png"),
    "user PNGs in frames/ --overwrite": (_user_frames, ["--overwrite"], 2, "never replaces a file it did not write"),
    "user file beside": (_user_notes, [], 2, "did not write (notes.txt)"),
    "user file beside --overwrite": (_user_notes, ["--overwrite"], 0, ""),
    "user files with our result names": (_user_results, [], 2, "did not write"),
    "user files with our result names --overwrite": (_user_results, ["--overwrite"], 2, "never replaces"),
    "frames/ links to user pictures": (_symlinked_frames, ["--overwrite"], 2, "frames"),
    "--out names a file": (_a_file, ["--overwrite"], 6, "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_generate_never_touches_files_it_did_not_write(case, voice, tmp_path):
    setup, extra, code, fragment = CASES[case]
    out = tmp_path / "out"
    setup(out)
    before = snapshot(tmp_path)
    res = generate(out, voice, *extra)
    assert_untouched(before, tmp_path)
    if code:
        res.one_error(code, fragment)
    else:
        assert res.code == 0, res.stderr[-3000:]
        assert len(frame_names(out)) == 25 and (out / "manifest.json").is_file()


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_out_is_refused_and_the_current_folder_untouched(name, voice, tmp_path):
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "000000.png").write_bytes(b"the user's frame")
    (tmp_path / "video.mp4").write_bytes(b"the user's video")
    before = snapshot(tmp_path)
    res = generate(name, voice, "--overwrite", cwd=tmp_path)
    res.one_error(2, "output folder name is empty")
    assert_untouched(before, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "video.mp4"]


def test_overwrite_replaces_only_our_files_and_sweeps_our_temporaries(tmp_path):
    """Our 2 s result, then the user adds files and a kill left a temporary frame; a 1 s run with --overwrite
    replaces our files, deletes our surplus frames 25..49 and the temporary, and nothing else."""
    out = tmp_path / "out"
    assert generate(out, speech(tmp_path, 2.0)).code == 0
    assert len(frame_names(out)) == 50
    (out / "frames" / "keep-me.png").write_bytes(b"user")
    (out / "cover.jpg").write_bytes(b"user")
    (out / "frames" / ".000003.x1y2z3.partial.png").write_bytes(b"torn")  # what a kill mid-write leaves
    users = {k: v for k, v in snapshot(tmp_path).items() if k.endswith(("keep-me.png", "cover.jpg"))}
    refused = generate(out, speech(tmp_path, 1.0))
    refused.one_error(2, "already holds a result")
    res = generate(out, speech(tmp_path, 1.0), "--overwrite")
    assert res.code == 0, res.stderr[-3000:]
    assert_untouched(users, tmp_path)
    assert frame_names(out) == [f"{i:06d}.png" for i in range(25)] and not partial_files(out)
    record = json.loads((out / "stableavatar-files.json").read_text())
    assert "cover.jpg" not in record["files"] and "frames/000000.png" in record["files"]


def test_a_locked_folder_is_busy_for_generate(voice, tmp_path):
    from stableavatar.service.jobdir import JobDir

    job = tmp_path / "job"
    out = generate(job, voice)
    assert out.code == 0, out.stderr[-2000:]
    before = snapshot(tmp_path)
    with JobDir(job).lock():  # what a worker running this folder holds
        res = generate(job, voice, "--overwrite")
    res.one_error(5, "in use")
    assert_untouched(before, tmp_path)


# ------------------------------------------------------------------------------------------ the worker
@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Serve(tmp_path_factory.mktemp("owner-worker"))
    assert w.next()["type"] == "ready"
    yield w
    w.stop()


PARAMS = {"width": 32, "height": 32, "steps": 1}


def _send(worker, job_id, job_dir, voice, image=IMAGE):
    worker.send({"op": "submit", "id": job_id, "job_dir": str(job_dir), "image": str(image), "audio": str(voice),
                 "params": PARAMS})
    return worker.until(lambda m: m.get("id") == job_id and m["type"] in ("accepted", "error"))[-1]


@pytest.mark.parametrize("case", ["user results", "user notes", "a file"])
def test_submit_into_a_folder_that_is_not_ours_is_refused(case, worker, voice, tmp_path):
    folder = tmp_path / "folder"
    {"user results": _user_results, "user notes": _user_notes, "a file": _a_file}[case](folder)
    before = snapshot(tmp_path)
    err = _send(worker, f"n-{case}", folder, voice)
    assert err["type"] == "error" and err["category"] in ("bad_input", "filesystem"), err
    assert ("did not write" if case != "a file" else "is a file") in err["message"] and err["hint"]
    assert_untouched(before, tmp_path)
    assert snapshot(tmp_path).keys() == before.keys()  # not even a lock file was added


def test_submit_accepts_a_folder_holding_only_the_inputs_it_names(worker, voice, tmp_path):
    """What the add-on does: JOB_DIR/inputs/reference.png and audio.wav first, then the submit naming them."""
    job = tmp_path / "job"
    (job / "inputs").mkdir(parents=True)
    image, audio = job / "inputs" / "reference.png", job / "inputs" / "audio.wav"
    image.write_bytes(IMAGE.read_bytes())
    audio.write_bytes(voice.read_bytes())
    before = snapshot(tmp_path)
    assert _send(worker, "addon", job, audio, image=image)["type"] == "accepted"
    assert worker.terminal("addon")[-1]["type"] == "done"
    assert_untouched(before, tmp_path)
    # a file beside those inputs that the request does not name makes the folder not ours
    other = tmp_path / "other"
    (other / "inputs").mkdir(parents=True)
    (other / "inputs" / "reference.png").write_bytes(IMAGE.read_bytes())
    (other / "inputs" / "mine.txt").write_text("user")
    err = _send(worker, "addon2", other, voice, image=other / "inputs" / "reference.png")
    assert err["type"] == "error" and "inputs/mine.txt" in err["message"]


def test_a_new_request_in_our_job_folder_deletes_only_our_files(worker, voice, tmp_path):
    job = tmp_path / "job"
    submit(worker, "j1", job, voice, PARAMS, image=IMAGE)
    assert worker.terminal("j1")[-1]["type"] == "done"
    (job / "frames" / "keep-me.png").write_bytes(b"user")
    (job / "frames" / ".000004.abcdef.partial.png").write_bytes(b"torn")  # a kill's temporary frame
    users = {k: v for k, v in snapshot(tmp_path).items() if k.endswith("keep-me.png")}
    submit(worker, "j2", job, voice, {**PARAMS, "seed": 9}, image=IMAGE)  # another request: starts over
    assert worker.terminal("j2")[-1]["type"] == "done"
    assert_untouched(users, tmp_path)
    assert frame_names(job) == [f"{i:06d}.png" for i in range(25)] and not partial_files(job)
