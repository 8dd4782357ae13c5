"""SHOTS.json: a list of shots (or {"shots": [...]}), each the fields of a worker `submit` (contract.SHOT) with
paths every node of the cluster sees. Read strictly here, before anything reaches the cluster; what only running
can tell (a corrupt still, silent audio) fails that shot alone."""
from __future__ import annotations

import json
from pathlib import Path

from ..contract import FINISHED_STATES, SHOT, ContractError, event
from ..errors import UserInputError


def read_shots(path: str | Path) -> list[dict]:
    """The shots of `path`, each with an id (default: the job folder's name) and an absolute job_dir."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError(f"shots file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UserInputError(f"shots file {path} is unreadable ({exc})",
                             hint='it must be JSON: a list of {"job_dir", "image", "audio", "params"}') from None
    shots = data.get("shots") if isinstance(data, dict) else data
    if not isinstance(shots, list) or not shots:
        raise UserInputError(f"shots file {path} holds no shots",
                             hint='give a JSON list (or {"shots": [...]}) of {"job_dir", "image", "audio", "params"}')
    out, seen = [], {}
    for k, shot in enumerate(shots):
        where = f"{path.name} shot {k + 1}"
        if not isinstance(shot, dict):
            raise UserInputError(f"{where} is not an object")
        try:
            SHOT.check(shot)
        except ContractError as exc:
            raise UserInputError(f"{where}: {exc.message.removeprefix('shot: ')}") from None
        job_dir = Path(shot["job_dir"]).expanduser()
        if not job_dir.is_absolute():
            job_dir = (path.parent / job_dir).resolve()
        shot_id = shot.get("id") or job_dir.name
        if shot_id in seen or str(job_dir) in seen.values():
            raise UserInputError(f"{where} repeats the id or job folder of an earlier shot ({shot_id})",
                                 hint="every shot needs its own job folder")
        seen[shot_id] = str(job_dir)
        out.append({**{k2: shot[k2] for k2 in ("image", "audio", "params", "client") if k2 in shot},
                    "id": shot_id, "job_dir": str(job_dir)})
    return out


def summary(batch: str, records: list[dict]) -> dict:
    """The `summary` line of a finished batch (contract.FARM_EVENTS)."""
    shots = []
    for r in records:
        result = r.get("result") or {}
        shots.append({"id": r["id"], "state": r["state"], "attempts": r["attempt"], "job_dir": r["job_dir"],
                      "video": result.get("video"), "frames": result.get("frames"),
                      "category": result.get("category"), "message": result.get("message")})
    count = {s: sum(1 for r in records if r["state"] == s) for s in FINISHED_STATES}
    return event("summary", batch=batch, **count, shots=shots)


def summary_text(s: dict) -> str:
    lines = [f"batch {s['batch']}: {s['done']} done, {s['failed']} failed, {s['cancelled']} cancelled"]
    for shot in s["shots"]:
        what = (f"{shot['frames']} frames -> {shot['video']}" if shot["state"] == "done"
                else f"{shot['category'] or shot['state']}: {shot['message'] or ''}".rstrip(": "))
        retried = f" (after {shot['attempts'] - 1} retries)" if shot["attempts"] > 1 else ""
        lines.append(f"  {shot['id']:<20} {shot['state']:<9} {what}{retried}")
    return "\n".join(lines)
