"""Fault class 4, silently wrong or misleading: inputs read as the user means them (EXIF orientation, ICC colours,
the pixel limit enforced, folders/devices/pipes named as such, NaN audio named), strict JSON types, files that
follow the user's umask, and a refused resume that says exactly what differs."""
from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from faults_kit import IMAGE, cli_process, copy_tree, generate, speech
from test_service import Serve, submit

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return speech(tmp_path_factory.mktemp("voice"), 1.0)


def _portrait(w=40, h=64) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 6, y * 4, (x + y) * 2], -1).astype(np.uint8), "RGB")


def test_exif_orientation_is_applied(tmp_path):
    from stableavatar.image import load_reference

    upright = _portrait()
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display": how phones store portraits
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "phone.png", exif=exif.tobytes())
    assert Image.open(tmp_path / "phone.png").size == (64, 40)
    assert torch.equal(load_reference(tmp_path / "phone.png", 32, 48), load_reference(tmp_path / "upright.png", 32, 48))


def _icc_linear_rgb() -> bytes:
    """An ICC v2 display profile with sRGB's primaries and a linear (gamma 1.0) curve: not sRGB."""
    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    name = b"Linear RGB (test)\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 2 + 1 + 67)),
            (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141))]
    tags += [(t, b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0100) + b"\0\0") for t in (b"rTRC", b"gTRC", b"bTRC")]
    table, data, offset = b"", b"", 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + bytes(12)
              + b"acsp" + bytes(24) + struct.pack(">I", 0) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


def test_icc_profiles_are_converted_to_srgb(tmp_path):
    from PIL import ImageCms
    from stableavatar.image import open_rgb

    grey = Image.new("RGB", (16, 16), (128, 128, 128))
    grey.save(tmp_path / "linear.png", icc_profile=_icc_linear_rgb())
    grey.save(tmp_path / "srgb.png", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    linear = np.asarray(open_rgb(tmp_path / "linear.png"))
    # linear 128/255 = 0.502 is 0.735 in sRGB's curve: 187.5
    assert 186 <= linear.min() and linear.max() <= 189, (linear.min(), linear.max())
    assert (np.asarray(open_rgb(tmp_path / "srgb.png")) == 128).all()  # sRGB stays as it is


# input -> (how it is made, which flag it goes to, expected words of the one error line)
def _folder(tmp):
    (tmp / "portrait").mkdir()
    return tmp / "portrait"


def _fifo(tmp):
    os.mkfifo(tmp / "pipe.png")  # opening it would wait for a writer forever
    return tmp / "pipe.png"


def _bomb(tmp):
    Image.new("1", (9000, 9000)).save(tmp / "huge.png")  # 81 MP, 1-bit: a small file, 2 GB once decoded
    return tmp / "huge.png"


def _audio(value):
    def make(tmp):
        import soundfile as sf
        wave = 0.3 * np.sin(np.arange(32000) / 7).astype(np.float32)
        wave[1234] = value
        sf.write(tmp / "bad.wav", wave, 16000, subtype="FLOAT")
        return tmp / "bad.wav"
    return make


INPUTS = {
    "image is a folder": (_folder, "image", 2, "is a folder, not a file"),
    "audio is a folder": (_folder, "audio", 2, "is a folder, not a file"),
    "audio is /dev/null": (lambda tmp: "/dev/null", "audio", 2, "not a regular file"),
    "image is /dev/zero": (lambda tmp: "/dev/zero", "image", 2, "not a regular file"),
    "image is a pipe": (_fifo, "image", 2, "not a regular file"),
    "image over the pixel limit": (_bomb, "image", 2, "over the limit of 80"),
    "NaN audio": (_audio(np.nan), "audio", 2, "NaN or infinite"),
    "inf audio": (_audio(np.inf), "audio", 2, "NaN or infinite"),
}


@pytest.mark.parametrize("case", list(INPUTS))
def test_inputs_are_named_for_what_they_are(case, voice, tmp_path):
    make, which, code, fragment = INPUTS[case]
    bad = make(tmp_path)
    args = {"image": IMAGE, "audio": voice, which: bad}
    res = generate(tmp_path / "out", args["audio"], image=args["image"])
    res.one_error(code, fragment)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values", [{"allow_silent": "false"}, {"save_latents": "true"}, {"steps": "2"},
                                    {"width": 32.5}, {"text_scale": True}, {"prompt": "a\ud800"},
                                    {"seed": float("nan")}, {"width": 10**400}])
def test_protocol_values_have_strict_json_types(values):
    from stableavatar.contract import ContractError, GenerationParams

    with pytest.raises(ContractError) as info:
        GenerationParams.from_dict(values)
    assert info.value.category in ("bad_input", "too_large") and "\n" not in info.value.message


def test_results_follow_the_users_umask(voice, tmp_path):
    out = tmp_path / "out"
    res = cli_process("generate", "--checkpoints", TINY, "--image", IMAGE, "--audio", voice, "--out", out,
                      "--width", "32", "--height", "32", "--steps", "1", "--device", "cpu", "--save-latents",
                      umask=0o027)
    assert res.code == 0, res.stderr[-2000:]
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    wrong = {k: oct(m) for k, m in modes.items() if m != (0o750 if (out / k).is_dir() else 0o640)}
    assert not wrong and len(modes) > 25, wrong


# ------------------------------------------------------------------------------------------ resume mismatches
@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, voice):
    """A job folder whose worker (float32, the tiny tree) was cancelled mid-denoise: a checkpoint to resume."""
    work = tmp_path_factory.mktemp("interrupted")
    w = Serve(work)
    try:
        assert w.next()["type"] == "ready"
        submit(w, "i", work / "job", voice, {"width": 32, "height": 32, "steps": 30}, image=IMAGE)
        w.until(lambda m: m["type"] == "progress" and m["phase"] == "denoise" and m["step"] >= 1)
        w.send({"op": "cancel", "id": "i"})
        assert w.terminal("i")[-1]["type"] == "cancelled"
    finally:
        w.stop()
    assert (work / "job" / "state.safetensors").is_file()
    return work / "job"


def _resume(job, *flags):
    return cli_process("resume", job, "--log-dir", job.parent / "logs", *flags)


def test_resume_with_another_dtype_says_so(interrupted):
    res = _resume(interrupted, "--dtype", "bfloat16")
    res.one_error(2, "made with dtype float32; this run uses bfloat16")
    assert "--dtype float32" in res.stderr


def test_resume_with_another_checkpoint_folder_says_so(interrupted, tmp_path):
    tree = copy_tree(tmp_path)
    pt = tree / "StableAvatar-1.3B" / "transformer3d-square.pt"
    torch.save(torch.load(pt, weights_only=True), pt, _use_new_zipfile_serialization=False)  # same weights, new file
    res = _resume(interrupted, "--checkpoints", tree)
    res.one_error(2, "made with transformer transformer3d-square.pt", str(TINY), str(tree))
    assert f"--checkpoints {TINY}" in res.stderr
