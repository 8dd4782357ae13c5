"""Bad input through the real CLI: a one-line actionable error, a non-zero exit, nothing half-written."""
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from conftest import run_cli


@pytest.fixture(scope="module")
def good(tmp_path_factory, parity_dir):
    d = tmp_path_factory.mktemp("good")
    wave, sr = sf.read(parity_dir / "inputs" / "audio.wav", always_2d=True)
    sf.write(d / "speech2s.wav", wave[: 2 * sr], sr)
    return {"image": parity_dir / "inputs" / "reference.png", "audio": d / "speech2s.wav"}


def _gen(tree, image, audio, out, *extra):
    return run_cli("generate", "--checkpoints", tree, "--image", image, "--audio", audio, "--out", out,
                   "--width", 64, "--height", 64, "--steps", 1, "--device", "cpu", *extra, timeout=300)


def _assert_refused(res, out, *needles):
    assert res.returncode != 0, res.stdout
    lines = [l for l in res.stderr.strip().splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-1500:]
    for n in needles:
        assert n in res.stderr, res.stderr[-1500:]
    assert "Traceback" not in res.stderr
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


def _bad_files(tmp):
    (tmp / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (tmp / "corrupt.wav").write_bytes(b"RIFF\x24\0\0\0WAVEfmt " + b"\x07" * 40)
    sf.write(tmp / "silent.wav", np.zeros(48000), 16000)
    sf.write(tmp / "tiny.wav", 0.3 * np.ones(300), 16000)  # 19 ms, less than one 40 ms frame
    return tmp


# case -> (which input to replace and with what, extra flags, expected words)
BAD_INPUT = {
    "missing image": ({"image": "nope.png"}, [], "does not exist"),
    "corrupt image": ({"image": "corrupt.png"}, [], "cannot read image"),
    "missing audio": ({"audio": "nope.wav"}, [], "does not exist"),
    "corrupt audio": ({"audio": "corrupt.wav"}, [], "cannot decode audio"),
    "silent audio": ({"audio": "silent.wav"}, [], "silent"),
    "audio shorter than one frame": ({"audio": "tiny.wav"}, [], "shorter than one video frame"),
    "width": ({}, ["--width", "100"], "multiple of 16"),
    "height": ({}, ["--height", "72"], "multiple of 16"),
    "overlap low": ({}, ["--overlap", "1"], "overlap 1 is out of range"),
    "overlap high": ({}, ["--overlap", "21"], "overlap 21 is out of range"),
    "steps": ({}, ["--steps", "0"], "steps"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input(case, good, tiny_tree, tmp_path):
    bad = _bad_files(tmp_path)
    replace, extra, needle = BAD_INPUT[case]
    inputs = dict(good, **{k: bad / v for k, v in replace.items()})
    out = tmp_path / "out"
    res = _gen(tiny_tree, inputs["image"], inputs["audio"], out, *extra)
    _assert_refused(res, out, needle, "hint: ")
    assert res.returncode == 2


def test_missing_checkpoint_folder(good, tmp_path):
    out = tmp_path / "out"
    res = _gen(tmp_path / "no-such-tree", good["image"], good["audio"], out)
    _assert_refused(res, out, "no checkpoint folder found", "no-such-tree", "stableavatar download")
    assert res.returncode == 3


@pytest.mark.parametrize("remove", ["Wan2.1-Fun-V1.1-1.3B-InP/Wan2.1_VAE.pth",
                                    "StableAvatar-1.3B/transformer3d-square.pt"])
def test_partial_checkpoint_folder(remove, good, tiny_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    (tree / remove).unlink()
    out = tmp_path / "out"
    res = _gen(tree, good["image"], good["audio"], out)
    _assert_refused(res, out, "incomplete", remove.split("/")[-1])
    assert res.returncode == 3


class Payload:  # a pickled non-tensor object: weights_only loading must refuse it without executing anything
    def __reduce__(self):
        return (print, ("code ran",))


def test_pt_with_pickled_objects_is_refused(good, tiny_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    sd = torch.load(tree / "StableAvatar-1.3B" / "transformer3d-square.pt", weights_only=True)
    sd["evil"] = Payload()
    torch.save(sd, tree / "StableAvatar-1.3B" / "transformer3d-square.pt")
    out = tmp_path / "out"
    res = _gen(tree, good["image"], good["audio"], out)
    _assert_refused(res, out, "transformer3d-square.pt")
    assert "code ran" not in res.stdout + res.stderr
    assert res.returncode == 3


def test_dit_with_a_missing_key_names_it(good, tiny_tree, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(tiny_tree, tree)
    sd = torch.load(tree / "StableAvatar-1.3B" / "transformer3d-square.pt", weights_only=True)
    del sd["blocks.1.cross_attn.k_vocal.weight"]
    torch.save(sd, tree / "StableAvatar-1.3B" / "transformer3d-square.pt")
    out = tmp_path / "out"
    res = _gen(tree, good["image"], good["audio"], out)
    _assert_refused(res, out, "blocks.1.cross_attn.k_vocal.weight")


def test_existing_result_is_not_overwritten(good, tiny_tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "video.mp4").write_bytes(b"precious")
    res = _gen(tiny_tree, good["image"], good["audio"], out)
    assert res.returncode == 2 and "holds files stableavatar did not write (video.mp4)" in res.stderr
    assert (out / "video.mp4").read_bytes() == b"precious"


@pytest.mark.parametrize("kind", ["rgba", "16bit"])
def test_rgba_and_16bit_stills_are_converted(kind, good, tiny_tree, tmp_path, media_dir):
    src = tmp_path / f"{kind}.png"
    if kind == "rgba":
        img = Image.open(media_dir / "case-3-reference.png").resize((88, 156))
        a = np.asarray(img).copy()
        a[:, :20, 3] = 0  # a transparent margin
        Image.fromarray(a, "RGBA").save(src)
    else:
        grey = np.asarray(Image.open(media_dir / "case-1-reference.png").convert("L").resize((96, 96)), np.uint16)
        Image.fromarray(grey * 257).save(src)
    out = tmp_path / "out"
    res = _gen(tiny_tree, src, good["audio"], out)
    assert res.returncode == 0, res.stderr[-1500:]
    assert len(list((out / "frames").glob("*.png"))) == 50 and (out / "video.mp4").stat().st_size > 0
