"""Headless demo of the whole Blender flow: voice strip -> Animate Avatar -> image strip -> MP4 of the edit.

    .venv/bin/python demo/blender_demo.py --out demo-output/blender

Installs this folder as the extension in a throw-away Blender user folder, builds an edit from the real
speech recording and portrait in tests/data/media, animates it with the real backend (default: the tiny
random-weight checkpoints, so the face is noise; pass --checkpoints for the real model), then writes
  OUT/demo.blend        the edit with the sound strip, the avatar strip and the job row
  OUT/demo.mp4          the sequencer rendered with picture and sound (H.264 + AAC)
  OUT/demo-frame.png    one frame of that render, for the README
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "bl_ext.user_default.stableavatar"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", default=str(ROOT / "tests" / "data" / "parity" / "checkpoints"))
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="backend Python")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the voice strip")
    ap.add_argument("--size", type=int, default=64, help="generation width/height (multiple of 16)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--fps", type=float, default=24.0, help="scene frame rate (29.97 works too)")
    ap.add_argument("--timeout", type=float, default=1800.0)
    return ap.parse_args()


def main():
    args = parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    res = Path(tempfile.mkdtemp(prefix="stableavatar-demo-user-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(res)
    (res / "extensions" / "user_default").mkdir(parents=True)
    os.symlink(ROOT, res / "extensions" / "user_default" / "stableavatar")

    import bpy
    import addon_utils
    addon_utils.enable(PKG, default_set=True, handle_error=lambda e: (_ for _ in ()).throw(e))
    rt = sys.modules[PKG + ".operators.runtime"]
    compat = sys.modules[PKG + ".blender_addon.compat"]

    p = bpy.context.preferences.addons[PKG].preferences
    p.python, p.checkpoints, p.device, p.jobs_dir = args.python, args.checkpoints, args.device, str(out / "jobs")

    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    sc.name = "Edit"
    if abs(args.fps - 29.97) < 0.01:
        sc.render.fps, sc.render.fps_base = 30, 1.001
    else:
        sc.render.fps, sc.render.fps_base = int(args.fps), 1.0
    fps = sc.render.fps / sc.render.fps_base
    sc.render.resolution_x = sc.render.resolution_y = 256
    sc.render.resolution_percentage = 100
    se = sc.sequence_editor_create()
    media = ROOT / "tests" / "data" / "media"
    voice = compat.top_strips(se).new_sound("voice", str(media / "case-2-speech.wav"), 1, 1)
    voice.frame_offset_end = voice.frame_duration - round(args.seconds * fps)
    se.active_strip = voice

    st = sc.stableavatar
    st.still_source, st.image_path = "FILE", str(media / "case-1-reference.png")
    st.resolution, st.width, st.height = "CUSTOM", args.size, args.size
    st.steps = args.steps
    assert bpy.ops.stableavatar.animate() == {"FINISHED"}, "Animate Avatar did not start"
    job = st.jobs[0]
    t0 = time.monotonic()
    last = ""
    while job.status not in ("IMPORTED", "ERROR", "CANCELLED"):  # timers do not fire headless: drive the tick
        if time.monotonic() - t0 > args.timeout:
            raise SystemExit(f"timed out; last state: {job.status} {job.message}")
        rt.SESSION.wait(0.5)
        rt.tick()
        if job.message != last:
            last = job.message
            print(f"[{time.monotonic() - t0:6.1f}s] {job.status}: {job.message}", flush=True)
    if job.status != "IMPORTED":
        raise SystemExit("job failed:\n" + job.error_text)
    rt.stop_backend(settle=False)

    tiny = "parity" in args.checkpoints
    label = compat.new_effect_strip(se, "label", "TEXT", 3, int(compat.left(voice)), int(compat.right(voice)))
    label.text = "StableAvatar for Blender" + (" (tiny weights: noise)" if tiny else "")
    label.font_size = 12
    label.location = (0.5, 0.06)

    sc.frame_start, sc.frame_end = int(compat.left(voice)), int(compat.right(voice)) - 1
    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))

    r = sc.render
    r.use_sequencer = True
    r.image_settings.file_format = "PNG"
    sc.frame_set((sc.frame_start + sc.frame_end) // 2)
    r.filepath = str(out / "demo-frame.png")
    bpy.ops.render.render(write_still=True)

    compat.set_video_output(sc)
    r.filepath = str(out / "demo.mp4")
    r.use_file_extension = False
    bpy.ops.render.render(animation=True)
    addon_utils.disable(PKG, default_set=True)
    for name in ("demo.blend", "demo.mp4", "demo-frame.png"):
        path = out / name
        if not path.is_file() or path.stat().st_size == 0:
            raise SystemExit(f"missing output {path}")
        print(path)


if __name__ == "__main__":
    main()
