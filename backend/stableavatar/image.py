"""Reference image: read, normalise odd formats, fit to the target size, map to [-1, 1]."""
from __future__ import annotations

import io
import logging
import os
import warnings

import numpy as np

from .errors import TooLargeError, UserInputError
from .files import require_file

MAX_IMAGE_PIXELS = 80_000_000  # ~ 9k x 9k; larger is a decompression bomb or a mistake
log = logging.getLogger(__name__)


def load_reference(path: str | os.PathLike, width: int, height: int, fit: str = "squash",
                   alpha_background: tuple[int, int, int] = (255, 255, 255)):
    """Return the reference as a float32 tensor [1, 3, height, width] in [-1, 1].

    squash = official behaviour (PIL bicubic resize to W x H, aspect ratio not kept); crop = cover then centre
    crop; pad = fit inside and pad with the mean border colour. Transparent pixels are composited over
    `alpha_background` (official `.convert("RGB")` would expose whatever colour hides under alpha 0)."""
    import torch

    img = open_rgb(path, alpha_background)
    img = fit_image(img, width, height, fit)
    arr = np.asarray(img, dtype=np.float32)
    return (torch.from_numpy(arr).permute(2, 0, 1)[None] / 255 * 2 - 1).contiguous()


def open_rgb(path: str | os.PathLike, alpha_background=(255, 255, 255)):
    """The still as the user sees it: 8-bit sRGB, upright (EXIF orientation applied), colours converted from
    its embedded ICC profile; refused when over MAX_IMAGE_PIXELS (checked from the header, before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = require_file(path, "image", hint="pass a PNG/JPEG/WebP/TIFF file")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below says it in one line
            img = Image.open(path)
        if img.width * img.height > MAX_IMAGE_PIXELS:
            raise TooLargeError(f"image {path.name} is {img.width}x{img.height} = {img.width * img.height / 1e6:.0f} "
                                f"megapixels, over the limit of {MAX_IMAGE_PIXELS // 1_000_000}",
                                hint="downscale it first; the model works at 512-832 px")
        img.load()
        img = ImageOps.exif_transpose(img)  # phones store portraits sideways plus an orientation tag
    except Image.DecompressionBombError:
        raise TooLargeError(f"image {path.name} is larger than {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
                            hint="downscale it first; the model works at 512-832 px") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserInputError(f"cannot read image {path.name} ({type(exc).__name__})",
                             hint="use a PNG/JPEG/WebP/TIFF file; re-export it if it is damaged") from None
    return to_rgb8(to_srgb(img, path.name), alpha_background)


def to_srgb(img, name: str = "image"):
    """Convert an image with an embedded ICC profile to sRGB (what the model was trained on). An sRGB profile
    is left alone (a round trip would only add rounding); an unreadable profile is logged and ignored."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "L", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(src) or "").lower().replace(" ", ""):
            return img
        out = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"),
                                        outputMode="RGBA" if img.mode == "RGBA" else "RGB")
        out.info.pop("icc_profile", None)
        return out
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.warning("%s: ignoring its unusable ICC profile (%s)", name, exc)
        return img


def to_rgb8(img, alpha_background=(255, 255, 255)):
    """8-bit RGB from any PIL mode: 16-bit and float images are rescaled (not clipped), alpha is composited."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            top = 1.0 if arr.max() <= 1.0 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*alpha_background, 255))
        img = Image.alpha_composite(base, rgba)
    return img.convert("RGB")


def fit_image(img, width: int, height: int, fit: str):
    from PIL import Image, ImageOps

    if fit == "squash":
        return img.resize((width, height), Image.BICUBIC)
    if fit == "crop":
        return ImageOps.fit(img, (width, height), Image.BICUBIC)
    if fit == "pad":
        border = np.concatenate([np.asarray(img)[[0, -1]].reshape(-1, 3), np.asarray(img)[:, [0, -1]].reshape(-1, 3)])
        colour = tuple(int(c) for c in border.mean(0).round())
        return ImageOps.pad(img, (width, height), Image.BICUBIC, color=colour)
    raise UserInputError(f"fit must be squash, crop or pad, not {fit!r}")
