"""The shot farm's files and lines (docs/scale.md): what SHOTS.json holds, and the JSON lines `stableavatar farm
run|status --follow --json` prints besides the worker's own job events (progress, done, error, cancelled, with
the shot's id as the job id)."""
from __future__ import annotations

from .messages import REQUESTS, Field, Message

SHOT_STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED_STATES = ("done", "failed", "cancelled")

# one entry of SHOTS.json (a list of these, or {"shots": [...]}): a worker `submit` whose paths every node sees
SHOT = Message("shot", "one shot of SHOTS.json: the fields of a worker submit",
               tuple(f for f in REQUESTS["submit"].fields if f.name != "fault"))

FARM_EVENTS = {
    "shot": Message("shot", "a shot changed state (attempt counts the actors that started it: >1 after a retry)", (
        Field("id", str, "the shot id"), Field("batch", str, "the batch it belongs to"),
        Field("state", str, "one of " + ", ".join(SHOT_STATES)), Field("job_dir", str, "its job folder"),
        Field("attempt", int, "actors that started it so far"),
        Field("pid", int, "the actor process running it", nullable=True),
        Field("node", str, "the node running it", nullable=True))),
    "summary": Message("summary", "the last line: every shot's outcome", (
        Field("batch", str, "the batch"), Field("done", int, "shots finished"), Field("failed", int, "shots failed"),
        Field("cancelled", int, "shots cancelled"),
        Field("shots", list, "per shot: id, state, attempts, job_dir, video, frames, category, message"))),
}

__all__ = ["SHOT", "SHOT_STATES", "FINISHED_STATES", "FARM_EVENTS"]
