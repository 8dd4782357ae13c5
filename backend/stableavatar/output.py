"""Writing results: atomic files, PNG frames as they are decoded, H.264 with the input audio muxed."""
from __future__ import annotations

import contextlib
import errno
import subprocess
from pathlib import Path

import numpy as np

from .contract import MODEL_FPS as FPS
from .files import atomic_path, write_json  # noqa: F401  (write_json: re-exported for the engine)


def write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=1)  # speed over size: frames are intermediates


def write_jpeg(path: Path, rgb: np.ndarray, max_side: int = 256) -> None:
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((max_side, max_side))
    with atomic_path(path) as tmp:
        img.save(tmp, format="JPEG", quality=85)


def to_uint8_frames(chunk) -> np.ndarray:
    """[3, f, H, W] in [-1, 1] -> [f, H, W, 3] uint8, exactly as the official save path: (x/2 + 0.5).clamp(0, 1),
    * 255, truncated (not rounded)."""
    x = (chunk.float() / 2 + 0.5).clamp(0, 1)
    return (x * 255).permute(1, 2, 3, 0).cpu().numpy().astype(np.uint8)


class VideoEncoder:
    """Streams RGB frames into ffmpeg (libx264, yuv420p, 25 fps) writing a temporary file; `finish` muxes the
    driving audio (AAC, cut to the video with -shortest) and moves the result into place atomically."""

    def __init__(self, final: Path, width: int, height: int, fps: int = FPS):
        import imageio_ffmpeg

        self.final = Path(final)
        self.ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        self._silent = self.final.with_name(f".{self.final.stem}.video-only.partial.mp4")
        self._proc = subprocess.Popen(
            [self.ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
             "-r", str(fps), "-i", "-", "-an", "-c:v", "libx264", "-preset", "medium", "-crf", "17",
             "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(self._silent)],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frames: np.ndarray) -> None:
        try:
            self._proc.stdin.write(np.ascontiguousarray(frames).tobytes())
        except BrokenPipeError:  # ffmpeg died (a full disk, most likely): say why, not "broken pipe"
            self._proc.wait()
            raise ffmpeg_error("encode the video", self._proc.stderr.read().decode(errors="replace"),
                               self._silent) from None

    def finish(self, audio: Path | None) -> Path:
        self._proc.stdin.close()
        err = self._proc.stderr.read().decode(errors="replace")
        if self._proc.wait() != 0:
            raise ffmpeg_error("encode the video", err, self._silent)
        try:
            with atomic_path(self.final) as tmp:
                cmd = [self.ffmpeg, "-y", "-loglevel", "error", "-i", str(self._silent)]
                if audio is not None:
                    cmd += ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:a", "aac", "-b:a", "192k", "-shortest"]
                cmd += ["-c:v", "copy", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
                res = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
                if res.returncode != 0:
                    raise ffmpeg_error("mux the audio", res.stderr, self.final)
        finally:
            self._silent.unlink(missing_ok=True)
        return self.final

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._proc.kill()
            self._proc.wait()
        self._silent.unlink(missing_ok=True)


# what ffmpeg prints for the filesystem faults errors.py explains (its exit code does not tell them apart)
_FFMPEG_OS_ERRORS = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                     "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
                     "File too large": errno.EFBIG}


def ffmpeg_error(doing: str, stderr: str, path: Path) -> Exception:
    for text, code in _FFMPEG_OS_ERRORS.items():
        if text in stderr:
            return OSError(code, text, str(path))
    return RuntimeError(f"ffmpeg failed to {doing}: {stderr.strip()[-300:]}")
