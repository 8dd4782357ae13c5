"""The end-to-end fixture: the official long pipeline's latents and frames, reproduced through the CLI a user
calls (--compat official, float32, CPU) and, for bisecting, the per-step latent states through the API."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import run_cli

pytestmark = pytest.mark.slow


def _run_args(parity_dir):
    run = json.loads((parity_dir / "e2e" / "run_args.json").read_text())["pipeline_call"]
    return run


def _cli_args(parity_dir, out):
    run = _run_args(parity_dir)
    return ["generate", "--checkpoints", parity_dir / "checkpoints", "--image", parity_dir / "inputs" / "reference.png",
            "--audio", parity_dir / "inputs" / "audio.wav", "--out", out, "--width", run["width"],
            "--height", run["height"], "--steps", run["num_inference_steps"], "--seed", run["seed"],
            "--overlap", run["overlap_window_length"], "--overlap-weights", run["overlapping_weight_scheme"],
            "--text-scale", run["text_guide_scale"], "--audio-scale", run["audio_guide_scale"],
            "--prompt", run["prompt"][0], "--negative-prompt", run["negative_prompt"],
            "--guidance", "official", "--compat", "official", "--device", "cpu", "--dtype", "float32",
            "--save-latents"]


def test_cli_reproduces_official_latents_and_frames(parity_dir, tmp_path):
    ref = load_file(parity_dir / "e2e" / "e2e_outputs.safetensors")
    res = run_cli(*_cli_args(parity_dir, tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "TINY RANDOM-WEIGHT" in res.stderr

    latents = load_file(tmp_path / "out" / "latents.safetensors")["latents"]
    diff = (latents - ref["final_latents"]).abs()
    assert diff.mean() <= 1e-3 and diff.max() <= 0.125, (diff.mean(), diff.max())

    frames = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "out" / "frames").glob("*.png"))])
    want = ref["frames_uint8"].numpy()
    assert frames.shape == want.shape == (177, 64, 64, 3)
    fdiff = np.abs(frames.astype(int) - want.astype(int))
    assert fdiff.max() <= 2 and (fdiff == 0).mean() >= 0.99, (fdiff.max(), (fdiff == 0).mean())

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["compat"] == "official" and manifest["guidance"] == "official" and manifest["seed"] == 42
    assert manifest["video"]["frames"] == 177 and manifest["checkpoints"]["tiny_random_weights"] is True
    assert set(manifest["timings_s"]) >= {"load_s", "encode_s", "denoise_s", "decode_s", "mux_s"}
    assert any(k.endswith("transformer3d-square.pt") for k in manifest["checkpoints"]["sha256"])

    import imageio_ffmpeg
    n, secs = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "out" / "video.mp4"))
    assert n == 177 and abs(secs - 177 / 25) < 0.05


def test_every_step_state_matches(parity_dir, tmp_path):
    """Latent state entering each step (a finer check that localises a divergence)."""
    from stableavatar.engine import Engine, Hooks
    from stableavatar.job import prepare_job
    from stableavatar.contract import GenerationParams

    ref = load_file(parity_dir / "e2e" / "e2e_outputs.safetensors")
    run = _run_args(parity_dir)
    params = GenerationParams(width=64, height=64, steps=4, seed=42, overlap=5, prompt=run["prompt"][0],
                              negative_prompt=run["negative_prompt"], compat="official", guidance="official")
    engine = Engine.load(parity_dir / "checkpoints", device="cpu", dtype="float32")
    states = []

    class Stop(Exception):
        pass

    def step_done(state):
        states.append(state)
        if state.step == 3:
            raise Stop

    job = prepare_job(parity_dir / "inputs" / "reference.png", parity_dir / "inputs" / "audio.wav", params)
    assert job.num_latents == 45 and len(job.windows) == 3
    with pytest.raises(Stop):
        engine.generate(job, tmp_path / "out", hooks=Hooks(step_done=step_done))
    for s in states:
        want = ref[f"latents_start_of_step{s.step}"]
        d = (s.latents.float() - want).abs()
        assert d.mean() <= 1e-3 and d.max() <= 0.125, (s.step, d.mean(), d.max())
        assert s.latents.dtype == torch.bfloat16  # official: the state is rounded to bf16 after every update
