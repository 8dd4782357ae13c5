"""What a `submit` asks for, made concrete before the job is queued: which inputs, which parameters (validated
by the contract, a random seed drawn once), which client record; and whether a stored checkpoint fits."""
from __future__ import annotations

from dataclasses import dataclass

from .. import contract
from ..contract import ContractError, GenerationParams
from ..errors import UserInputError
from ..state import PARTS, mismatch
from .jobdir import JobDir, existing_file


@dataclass(frozen=True)
class Submission:
    image: str
    audio: str
    params: GenerationParams   # complete, the seed concrete
    requested: dict            # the parameters as asked for (seed -1 stays -1): what "the same request" compares
    client: dict | None


def read_submit(cmd: dict, jd: JobDir, job_id: str) -> Submission:
    """The submission of `cmd`; without image and audio, the job stored in the folder (to resume it)."""
    image, audio = cmd.get("image"), cmd.get("audio")
    if (image is None) != (audio is None):
        raise ContractError(f"submit: missing field {'audio' if audio is None else 'image'!r}", op="submit",
                            id=job_id, hint="give both image and audio, or neither to resume the job stored "
                            "in job_dir", category="bad_request")
    if image is None and not jd.has_request():
        raise ContractError("submit: missing fields 'image' and 'audio' (job_dir holds no job.json to resume)",
                            op="submit", id=job_id, category="bad_request")
    if image is not None:
        existing_file(image, "image"), existing_file(audio, "audio")
    requested, client = cmd.get("params"), cmd.get("client")
    stored = _stored_request(jd)
    if image is None:
        stored = jd.read_request()  # a readable job.json is required to resume: its error says why not
        image, audio = stored["image"], stored["audio"]
        client = stored.get("client") if client is None else client
        requested = stored.get("params_requested", stored["params"]) if requested is None else requested
    requested = GenerationParams.from_dict(requested or {}, where="params.").to_dict()
    params = GenerationParams.from_dict(requested)
    if params.seed == contract.RANDOM_SEED:  # the same request again keeps the seed drawn the first time
        same = stored is not None and stored.get("params_requested") == requested
        params = params.replace(seed=stored["params"]["seed"]) if same else params.with_seed()
    return Submission(image, audio, params, requested, client)


def check_checkpoint(jd: JobDir, req: dict, meta: dict, fingerprint: str, parts: dict | None = None) -> None:
    """Same inputs and params but other weights or dtype: refuse at submit, not when the job reaches the queue head,
    naming what differs (state.mismatch) when the checkpoint recorded it."""
    stored = meta.get("fingerprint")
    if stored and fingerprint != stored and any(k in meta for k in PARTS):
        problem = mismatch(meta, fingerprint, parts or {})
        if problem:
            problem.message = f"{jd.path}: {problem.message}"
            raise problem
    if stored and fingerprint != stored:
        was = req.get("worker") or {}
        raise UserInputError(f"the checkpoint in {jd.path} was made by a worker with other settings",
                             hint=f"resume it with a worker started like the original (dtype {was.get('dtype')}, "
                                  f"transformer {was.get('transformer') or 'default'}), or delete "
                                  f"{jd.state.name} to start over")


def _stored_request(jd: JobDir) -> dict | None:
    try:
        return jd.read_request() if jd.has_request() else None
    except UserInputError:
        return None
