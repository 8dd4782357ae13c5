"""Facts both sides compute with: the protocol version, the model's rates and sizes, the mode names, the job
folder's layout."""
from __future__ import annotations

PROTOCOL = 1
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; anything near this is a client bug, not a job
# File transfers (put/fetch) carry base64, which grows 4/3: 512 KiB become ~683 KiB, well inside one line.
TRANSFER_CHUNK_BYTES = 512 * 1024

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
             "latents": "latents.safetensors", "log": "log", "traceback": "traceback.txt",
             "owned": "stableavatar-files.json"}  # owned: what a `generate` wrote there (backend ownership.py)
INPUT_STEMS = {"image": "reference", "audio": "audio"}   # inputs/reference.<ext>, inputs/audio.<ext>
FRAME_PATTERN = "{:06d}.png"


def input_name(kind: str, suffix: str) -> str:
    """The file name of a job input inside `inputs/` (kind: image or audio; suffix like ".png")."""
    return INPUT_STEMS[kind] + suffix.lower()
