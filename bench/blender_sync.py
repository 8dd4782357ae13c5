"""Sync of the rendered edit, and the add-on's responsiveness, measured headless with the real backend.

    .venv/bin/python bench/blender_sync.py [--fps 23.976 29.97] [--seconds 2]

For each scene rate: a voice strip (trimmed, starting mid-timeline) is animated with the tiny test weights;
the longest timer tick while the job runs and the time from Animate (backend not running) to the first
progress event are recorded. Then every frame file of the result is replaced by one that draws its own index
in black and white bars (so each survives H.264 and can be named), the sequencer is rendered with its sound to
MP4 (H.264 + AAC), and ffmpeg (imageio-ffmpeg) decodes it back: each video frame must show the model frame
`timing.element_indices` says, and the audio must start where the voice strip starts. Prints one table.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PKG = "bl_ext.user_default.stableavatar"
MEDIA = ROOT / "tests" / "data" / "media"
SIZE, BITS = 64, 8  # frame size; bars per frame (indices up to 255)


def index_frame(i: int, size: int) -> np.ndarray:
    """Frame `i` as bars (bit b set: bar b white), at the generated frames' own size (the strip fits them to
    the render size, as it did the real frames)."""
    img = np.zeros((size, size, 3), np.uint8)
    w = size // BITS
    for b in range(BITS):
        if i >> b & 1:
            img[:, b * w:(b + 1) * w] = 255
    return img


def read_index(frame: np.ndarray) -> int:
    w = SIZE // BITS
    return sum(1 << b for b in range(BITS) if frame[8:-8, b * w + 2:(b + 1) * w - 2].mean() > 128)


def setup():
    res = Path(tempfile.mkdtemp(prefix="stableavatar-sync-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(res)
    os.environ["STABLEAVATAR_HOME"] = str(res / "data")
    (res / "extensions" / "user_default").mkdir(parents=True)
    os.symlink(ROOT, res / "extensions" / "user_default" / "stableavatar")
    import bpy  # noqa: F401  (after BLENDER_USER_RESOURCES)
    import addon_utils
    addon_utils.enable(PKG, default_set=True, handle_error=lambda e: (_ for _ in ()).throw(e))
    return res


def run(fps_name: str, seconds: float, out: Path, python: str):
    import bpy
    from PIL import Image
    rt = sys.modules[PKG + ".operators.runtime"]
    compat = sys.modules[PKG + ".blender_addon.compat"]
    timing = sys.modules[PKG + ".blender_addon.timing"]
    rt.stop_backend(settle=False)  # every rate measures a cold start
    p = bpy.context.preferences.addons[PKG].preferences
    p.python, p.checkpoints, p.device, p.jobs_dir = python, str(ROOT / "tests/data/parity/checkpoints"), "cpu", ""
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    ntsc = {"23.976": (24, 1.001), "29.97": (30, 1.001), "59.94": (60, 1.001)}
    sc.render.fps, sc.render.fps_base = ntsc[fps_name] if fps_name in ntsc else (int(fps_name), 1.0)
    fps = timing.scene_fps(sc.render.fps, sc.render.fps_base)
    sc.render.resolution_x = sc.render.resolution_y = SIZE
    sc.render.resolution_percentage = 100
    se = sc.sequence_editor_create()
    voice = compat.top_strips(se).new_sound("voice", str(MEDIA / "case-2-speech.wav"), 1, 7)
    voice.frame_offset_start = 11
    voice.frame_offset_end = voice.frame_duration - 11 - round(seconds * float(fps))
    se.active_strip = voice
    st = sc.stableavatar
    st.image_path, st.resolution, st.width, st.height, st.steps, st.fit = (
        str(MEDIA / "case-1-reference.png"), "CUSTOM", 32, 32, 1, "crop")
    t0 = time.monotonic()
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}
    job = st.jobs[0]
    first_progress, longest = None, 0.0
    while job.status not in ("IMPORTED", "ERROR", "CANCELLED"):
        rt.SESSION.wait(0.1)
        t = time.perf_counter()
        rt.tick()
        longest = max(longest, (time.perf_counter() - t) * 1000)
        if first_progress is None and job.phase:
            first_progress = time.monotonic() - t0
    assert job.status == "IMPORTED", job.error_text
    strip = compat.all_strips(se)[job.result_strip]
    frames_dir = Path(bpy.path.abspath(strip.directory))
    names = sorted(f for f in os.listdir(frames_dir) if f.endswith(".png"))
    size = Image.open(frames_dir / names[0]).size[0]
    for i, name in enumerate(names):
        Image.fromarray(index_frame(i, size)).save(frames_dir / name)
    left, right = int(compat.left(voice)), int(compat.right(voice))
    sc.frame_start, sc.frame_end = 1, right + 5
    sc.render.use_sequencer = True
    compat.set_video_output(sc)
    if hasattr(sc.render.ffmpeg, "constant_rate_factor"):
        sc.render.ffmpeg.constant_rate_factor = "PERC_LOSSLESS"
    mp4 = out / f"sync-{fps_name}.mp4"
    sc.render.filepath, sc.render.use_file_extension = str(mp4), False
    bpy.ops.render.render(animation=True)

    import imageio_ffmpeg
    ff = imageio_ffmpeg.get_ffmpeg_exe()
    raw = subprocess.run([ff, "-v", "error", "-i", str(mp4), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    video = np.frombuffer(raw, np.uint8).reshape(-1, SIZE, SIZE, 3)
    want = timing.element_indices(right - left, len(names), fps)
    shown = [read_index(video[f - sc.frame_start]) for f in range(left, right)]
    mismatches = sum(a != b for a, b in zip(shown, want))
    pcm = np.frombuffer(subprocess.run([ff, "-v", "error", "-i", str(mp4), "-f", "s16le", "-ac", "1", "-ar", "16000",
                                        "-"], capture_output=True, check=True).stdout, "<i2").astype(np.float64)
    with wave.open(str(MEDIA / "case-2-speech.wav")) as w:
        src = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels()).mean(axis=1)
    skip = round((Fraction(left) - Fraction(voice.frame_start)) / fps * 16000)
    ref = src[skip: skip + 8000]
    expected = round((Fraction(left) - sc.frame_start) / fps * 16000)
    lags = range(expected - 800, expected + 801)
    score = [np.dot(pcm[k: k + len(ref)], ref) for k in lags]
    offset_ms = (lags[int(np.argmax(score))] - expected) / 16.0
    return {"fps": fps_name, "frames": right - left, "mismatches": mismatches, "audio_offset_ms": offset_ms,
            "cold_start_s": first_progress, "longest_tick_ms": longest}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fps", nargs="+", default=["23.976", "29.97"])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--python", default=os.environ.get("STABLEAVATAR_BACKEND_PYTHON", str(ROOT / ".venv/bin/python")))
    args = ap.parse_args()
    res = setup()
    rows = [run(f, args.seconds, res, args.python) for f in args.fps]
    print("| scene fps | strip frames | frame mismatches | audio offset (ms) | cold start to first progress (s) | "
          "longest tick (ms) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fps']} | {r['frames']} | {r['mismatches']} | {r['audio_offset_ms']:+.3f} | "
              f"{r['cold_start_s']:.1f} | {r['longest_tick_ms']:.1f} |")
    sys.modules[PKG + ".operators.runtime"].stop_backend(settle=False)


if __name__ == "__main__":
    main()
