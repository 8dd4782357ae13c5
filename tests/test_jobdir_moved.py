"""A job folder that moved with its project (another disk, a farm) still resumes: its own input copies are used
when the paths recorded in job.json are gone."""
import json

from stableavatar.service.jobdir import JobDir


def test_moved_job_folder_uses_its_own_inputs(tmp_path):
    old, new = tmp_path / "old" / "job", tmp_path / "new" / "job"
    (new / "inputs").mkdir(parents=True)
    (new / "inputs" / "reference.png").write_bytes(b"png")
    (new / "inputs" / "audio.wav").write_bytes(b"wav")
    (new / "job.json").write_text(json.dumps({"image": str(old / "inputs" / "reference.png"),
                                              "audio": str(old / "inputs" / "audio.wav"), "params": {}}))
    req = JobDir(new).read_request()
    assert req["image"] == str(new.resolve() / "inputs" / "reference.png")
    assert req["audio"] == str(new.resolve() / "inputs" / "audio.wav")
    elsewhere = tmp_path / "still-there.png"
    elsewhere.write_bytes(b"png")
    (new / "job.json").write_text(json.dumps({"image": str(elsewhere), "audio": str(old / "a.wav"), "params": {}}))
    req = JobDir(new).read_request()
    assert req["image"] == str(elsewhere) and req["audio"] == str(old / "a.wav")  # nothing to remap to: as stored
