"""The contract between the Blender add-on and the backend: one file, standard library only (no torch, no bpy).

It is the one home of everything that crosses the process boundary:

* the protocol version, the line framing and the line limit;
* the model facts both sides compute with (25 fps, 16 kHz, resolution presets, parameter bounds);
* the generation parameters as specs (name, type, default, choices or range, help, CLI flag, panel group), from
  which the CLI flags (`cli_args.py`), `GenerationParams` and its validation (below), the add-on's panel
  properties (`ui/props.py`) and the tables of `docs/protocol.md` (`contract_doc.py`) are all derived;
* the engine settings (checkpoints, device, dtype, memory mode) shared by `generate`, `serve`, `resume` and the
  add-on's backend command line;
* every request and every event with its fields and JSON types, and the error categories with whose fault each is.

The backend imports it as `stableavatar.contract`; the add-on loads this same file (`blender_addon/contract.py`),
so the two sides cannot drift apart. Adding a parameter: see README "How to add a generation parameter".
"""
from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass, field

PROTOCOL = 1
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; anything near this is a client bug, not a job

# ---------------------------------------------------------------------------------------------- model facts
MODEL_FPS = 25                                     # the model's video rate (official inference.py --fps)
SAMPLE_RATE = 16000                                # wav2vec2's input rate
SAMPLES_PER_FRAME = SAMPLE_RATE // MODEL_FPS       # 640: one video frame per 40 ms of audio
RESOLUTION_PRESETS = {"512x512": (512, 512), "480x832": (480, 832), "832x480": (832, 480)}  # W x H, trained
RESOLUTION_MULTIPLE = 16                           # VAE stride 8 x patch 2
MAX_SIDE = 2048
MAX_PIXELS = 1280 * 1280                           # per frame; 3x the largest trained preset's tokens

GUIDANCE_MODES = ("official", "audio-native")      # behaviour: backend guidance.py
COMPAT_MODES = ("fixed", "official")               # behaviour: backend compat.py
OVERLAP_WEIGHTS = ("uniform", "log")
FIT_MODES = ("squash", "crop", "pad")
DEVICES = ("cuda", "cpu")
DTYPES = ("bfloat16", "float32")
MEMORY_MODES = ("full", "model_offload", "sequential_offload", "fp8")  # fastest first; see backend memory.py
MEMORY_MODE_CHOICES = ("auto",) + MEMORY_MODES                         # auto: the fastest exact mode that fits
MEMORY_MODE_HELP = {
    "auto": "the fastest exact mode that fits the GPU's free memory",
    "full": "every model on the GPU: fastest, needs the most memory",
    "model_offload": "idle models wait on the CPU; each moves to the GPU for its phase",
    "sequential_offload": "weights streamed layer by layer: least GPU memory, slowest",
    "fp8": "transformer weights stored in 8 bits (approximate: outputs change)",
}
# what to try after an out-of-memory error, cheapest change first
NEXT_MEMORY_MODE = {"full": "model_offload", "model_offload": "fp8", "fp8": "sequential_offload"}
PHASES = ("load", "encode", "denoise", "decode", "mux")
RANDOM_SEED = -1                                   # seed value meaning "draw one and record it"
SEED_MAX = 2**31 - 1                               # drawn seeds fit Blender's 32-bit IntProperty

# The official StableAvatar negative prompt (inference.py L547), verbatim.
OFFICIAL_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_PROMPT = "The protagonist is talking"      # one of the prompts the model was trained with


# ---------------------------------------------------------------------------------------------- job folder
# The job folder is the unit of durability (docs/protocol.md "Job directory"): the worker writes it, the add-on
# reads it (and writes the inputs into it before submitting, so nothing is copied twice).
JOB_FILES = {"request": "job.json", "inputs": "inputs", "lock": "lock", "state": "state.safetensors",
             "frames": "frames", "preview": "preview.jpg", "video": "video.mp4", "manifest": "manifest.json",
             "latents": "latents.safetensors", "log": "log", "traceback": "traceback.txt"}
INPUT_STEMS = {"image": "reference", "audio": "audio"}   # inputs/reference.<ext>, inputs/audio.<ext>
FRAME_PATTERN = "{:06d}.png"


def input_name(kind: str, suffix: str) -> str:
    """The file name of a job input inside `inputs/` (kind: image or audio; suffix like ".png")."""
    return INPUT_STEMS[kind] + suffix.lower()


class ContractError(ValueError):
    """A value or message that breaks the contract. `category` says whose fault it is (see CATEGORIES)."""

    def __init__(self, message: str, hint: str | None = None, *, category: str = "bad_input",
                 op: str | None = None, id: str | None = None, ref: str | None = None):
        super().__init__(message)
        # id: the job this error decides (a rejected submit); ref: an id the request named whose job is
        # unaffected (cancel of an unknown id): a client must not mark that job failed
        self.message, self.hint, self.category, self.op, self.id, self.ref = message, hint, category, op, id, ref


# ---------------------------------------------------------------------------------------------- value specs
@dataclass(frozen=True)
class Spec:
    """One value that crosses the boundary: its type, default, allowed values and how people meet it."""
    name: str
    type: type                       # int, float, str or bool (JSON integer, number, string, boolean)
    default: object
    help: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    multiple: int | None = None
    label: str = ""                  # the add-on's label (default: from the name)
    panel: str | None = None         # add-on panel group ("main", "guidance"); None: not in the panel
    panel_default: object = None     # the artist's default when it differs from the CLI's (None: the same)
    cli: bool = True                 # has a command-line flag
    choice_help: tuple = ()          # (choice, label, description) for the panel's enum items

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def ui_label(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def ui_default(self):
        return self.default if self.panel_default is None else self.panel_default

    def check(self, value, where: str = "") -> object:
        """`value` in its canonical type, or ContractError. Strict JSON types: "false" is not a boolean, 3.5 is
        not an integer, true is not a number."""
        name = f"{where}{self.name}"
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type is int:
            ok = isinstance(value, int) and not isinstance(value, bool) or \
                isinstance(value, float) and value.is_integer()
        elif self.type is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, self.type)
        if not ok:
            raise ContractError(f"{name} must be {_json_type(self.type)}, not {_json_repr(value)}",
                                hint=self.help)
        value = self.type(value)
        if self.choices is not None and value not in self.choices:
            raise ContractError(f"{name} must be one of {', '.join(map(str, self.choices))}, not {value!r}")
        if self.multiple and value % self.multiple:
            near = max(self.multiple, round(value / self.multiple) * self.multiple)
            raise ContractError(f"{name} {value} is not a multiple of {self.multiple}",
                                hint=f"use a preset ({', '.join(RESOLUTION_PRESETS)}) or a multiple of "
                                     f"{self.multiple}, e.g. {near}")
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ContractError(f"{name} {value} is out of range {_num(self.min)}..{_num(self.max)}", hint=self.help)
        return value


def _json_type(t: type) -> str:
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "text",
            dict: "an object", list: "an array"}[t]


def _json_repr(value) -> str:
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return type(value).__name__


def _num(v) -> str:
    return "" if v is None else (str(int(v)) if float(v).is_integer() else str(v))


def param(default, help: str, **kw):
    """A dataclass field carrying its Spec (the name and type are filled in from the annotation)."""
    return field(default=default, metadata={"spec": kw | {"default": default, "help": help}})


def _specs(cls) -> dict[str, Spec]:
    types = {"int": int, "float": float, "str": str, "bool": bool}
    return {f.name: Spec(name=f.name, type=types[f.type], **f.metadata["spec"]) for f in dataclasses.fields(cls)}


class _Values:
    """Shared behaviour of the spec-backed dataclasses: strict construction from JSON, validation, dicts."""

    SPECS: dict[str, Spec] = {}

    @classmethod
    def from_dict(cls, d: dict, where: str = ""):
        if not isinstance(d, dict):
            raise ContractError(f"{where.rstrip('.') or cls.__name__} must be an object, not {_json_repr(d)}")
        unknown = sorted(set(d) - set(cls.SPECS))
        if unknown:
            raise ContractError(f"unknown {cls.KIND}(s): {', '.join(unknown)}",
                                hint=f"known: {', '.join(cls.SPECS)}")
        return cls(**d).validate(where)

    def validate(self, where: str = ""):
        for name, spec in self.SPECS.items():
            value = getattr(self, name)
            if value is None:  # JSON null or "not given": the default
                setattr(self, name, spec.default)
                continue
            setattr(self, name, spec.check(value, where))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes).validate()


# ---------------------------------------------------------------------------------------------- generation
@dataclass
class GenerationParams(_Values):
    """What one job generates. Every field is a Spec: the CLI flag, the protocol's `params` and the panel."""
    KIND = "generation parameter"
    width: int = param(512, "frame width in pixels (a preset or any multiple of 16)", min=16, max=MAX_SIDE,
                       multiple=RESOLUTION_MULTIPLE)
    height: int = param(512, "frame height in pixels (a preset or any multiple of 16)", min=16, max=MAX_SIDE,
                        multiple=RESOLUTION_MULTIPLE)
    steps: int = param(50, "denoising steps (official: 50)", min=1, max=1000)
    seed: int = param(42, f"noise seed; {RANDOM_SEED} draws a new one per job and records it", min=RANDOM_SEED,
                      max=2**63 - 1, panel="main", panel_default=RANDOM_SEED)
    overlap: int = param(5, "window overlap in latent frames (official: 5)", min=2, max=20, panel="guidance")
    overlap_weights: str = param("uniform", "how overlapping windows are blended", choices=OVERLAP_WEIGHTS,
                                 panel="guidance", label="Blend")
    text_scale: float = param(3.0, "text guidance scale (official: 3)", min=-100, max=100, panel="guidance")
    audio_scale: float = param(5.0, "audio guidance scale (official: 5)", min=-100, max=100, panel="guidance")
    prompt: str = param(DEFAULT_PROMPT, "what the video shows", panel="main")
    negative_prompt: str = param(OFFICIAL_NEGATIVE_PROMPT, "what to steer away from (default: the official one)")
    guidance: str = param("official", "official = the released nested CFG; audio-native = docs/guidance.md",
                          choices=GUIDANCE_MODES, panel="guidance", choice_help=(
                              ("official", "Official", "Guidance as in the official StableAvatar code"),
                              ("audio-native", "Audio Native", "Separate text and audio guidance (docs/guidance.md)")))
    compat: str = param("fixed", "official = the released code's numbers and quirks; fixed = its bugs corrected",
                        choices=COMPAT_MODES, panel="guidance", label="Behaviour", choice_help=(
                            ("fixed", "Fixed", "The released code's timing bugs corrected (lips stay in sync)"),
                            ("official", "Official", "The released code's numbers, quirks included")))
    fit: str = param("squash", "how a still of another aspect meets the frame (squash = official)",
                     choices=FIT_MODES, panel="main", panel_default="crop", choice_help=(
                         ("squash", "Squash", "Stretch the still to the resolution (official)"),
                         ("crop", "Crop", "Fill the resolution, cutting the overflow"),
                         ("pad", "Pad", "Fit inside the resolution, padding the rest")))
    save_latents: bool = param(False, "also write latents.safetensors")
    allow_silent: bool = param(False, "accept audio without any sound (a closed-mouth take)")

    def validate(self, where: str = ""):
        super().validate(where)
        if self.width * self.height > MAX_PIXELS:
            raise ContractError(f"{self.width}x{self.height} is {self.width * self.height / 1e6:.1f} megapixels per "
                                f"frame, over the limit of {MAX_PIXELS / 1e6:.1f}",
                                hint=f"the model was trained at {', '.join(RESOLUTION_PRESETS)}; upscale afterwards")
        return self

    def with_seed(self) -> "GenerationParams":
        """A copy whose seed is concrete: RANDOM_SEED is replaced by a freshly drawn one."""
        if self.seed != RANDOM_SEED:
            return self
        return dataclasses.replace(self, seed=secrets.randbelow(SEED_MAX + 1))


GenerationParams.SPECS = _specs(GenerationParams)
PARAMS = GenerationParams.SPECS


# ---------------------------------------------------------------------------------------------- engine settings
@dataclass
class EngineSettings(_Values):
    """How a backend process runs (one per worker, not per job): shared by generate, serve and resume."""
    KIND = "engine setting"
    checkpoints: str = param(None, "official checkpoint folder (default: $STABLEAVATAR_CHECKPOINTS, then "
                                   "./checkpoints)")
    transformer: str = param(None, "StableAvatar .pt (default: square.pt for square sizes, rec-vec.pt otherwise)")
    device: str = param(None, "default: cuda when available", choices=DEVICES)
    dtype: str = param(None, "default: bfloat16 on cuda (as released), float32 on cpu", choices=DTYPES)
    memory_mode: str = param("auto", "; ".join(f"{k} = {v}" for k, v in MEMORY_MODE_HELP.items()),
                             choices=MEMORY_MODE_CHOICES)

    def argv(self) -> list[str]:
        """These settings as command-line flags (what the add-on appends to `serve --stdio`)."""
        out = []
        for name, spec in self.SPECS.items():
            value = getattr(self, name)
            if value is not None and value != spec.default:
                out += [spec.flag, str(value)]
        return out


EngineSettings.SPECS = _specs(EngineSettings)
ENGINE_SETTINGS = EngineSettings.SPECS


# ---------------------------------------------------------------------------------------------- error categories
@dataclass(frozen=True)
class Category:
    fault: str       # whose fault: client (a bug in the caller), user (a file or value), setup (install,
                     # weights), resources (memory, disk), environment (filesystem), none, bug (ours)
    exit_code: int   # of the CLI
    retry: bool      # whether retrying the same job unchanged can succeed
    doc: str


CATEGORIES = {
    "bad_request": Category("client", 2, False, "the line itself is wrong (JSON, op, fields, types, size)"),
    "bad_input": Category("user", 2, False, "a file or parameter cannot be used; the message names it"),
    "missing_weights": Category("setup", 3, False, "the checkpoint folder was not found, is incomplete or damaged; "
                                "the worker retries loading on every submit"),
    "out_of_memory": Category("resources", 4, True, "out of GPU or host memory: the job's memory is released, the "
                              "worker keeps serving; the hint names a lighter memory mode and a smaller size"),
    "busy": Category("user", 5, True, "the job folder is locked by another process or already queued here"),
    "cancelled": Category("none", 130, True, "the job was cancelled or interrupted; its checkpoint is kept"),
    "internal": Category("bug", 1, True, "a bug: `traceback` points at the full report"),
}


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
                want = "a non-empty string" if f.type is str else _json_type(f.type)
                raise ContractError(f"{self.name}: field {f.name!r} must be {want}", category="bad_request", op=op,
                                    id=job_id)
        return obj


def _m(name, doc, *fields):
    return name, Message(name, doc, tuple(fields))


_ID = Field("id", str, "the job id")
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
       Field("suggest", dict, "out_of_memory: memory_mode, width, height that would fit better", required=False)),
    _m("cancelled", "the job stopped; submit the folder again to continue",
       _ID, Field("resumable", bool, "a checkpoint exists"), Field("reason", str, "cancel or shutdown")),
    _m("status", "answer to status",
       Field("running", str, "the running job's id", nullable=True), Field("queue", list, "queued ids in order"),
       Field("progress", dict, "the running job's last progress fields", nullable=True),
       Field("memory_mode", str, "the memory mode in use"), Field("engine_loaded", bool, "models are loaded")),
    _m("bye", "the worker exits after this line", Field("reason", str, "shutdown requested, stdin closed, SIGTERM, ...")),
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
    """One line of UTF-8 JSON. JSON has no NaN/Infinity: such values (an ETA of inf) become null."""
    return json.dumps(_finite(msg), ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                      default=str).encode("utf-8") + b"\n"


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
        where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ContractError(f"malformed JSON: {getattr(exc, 'msg', type(exc).__name__)}{where}",
                            hint="send one JSON object per line", category="bad_request") from None
    if not isinstance(obj, dict):
        raise ContractError(f"expected a JSON object, got {type(obj).__name__}", category="bad_request")
    name = obj.get(key)
    named = obj.get("id") if isinstance(obj.get("id"), str) else None
    job_id = named if name == "submit" else None
    op = name if isinstance(name, str) and key == "op" else None
    if obj.get("protocol", PROTOCOL) != PROTOCOL:
        raise ContractError(f"unsupported protocol version {_json_repr(obj['protocol'])}", op=op,
                            hint=f"this side speaks protocol {PROTOCOL}", category="bad_request")
    if not isinstance(name, str):
        raise ContractError(f"missing field {key!r}", hint=f"{key}s: {', '.join(table)}", category="bad_request")
    if name not in table:
        raise ContractError(f"unknown {key} {name!r}", hint=f"{key}s: {', '.join(table)}", op=op, ref=named,
                            category="bad_request")
    return table[name].check(obj, op=op, job_id=job_id, nonempty=key == "op")


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
