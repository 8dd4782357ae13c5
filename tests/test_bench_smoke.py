"""The benchmark harness at smoke size, run the way CI runs it (a real subprocess), so it never rots."""
import json
import subprocess
import sys

from conftest import REPO

from stableavatar.contract import MEMORY_MODES
ATTENTION = ("native", "_native_flash", "_native_efficient", "_native_cudnn", "_native_math", "flash", "_flash_3",
             "sage")


def test_bench_smoke_subprocess(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--time-limit", "120", "--json", str(out),
                           "--peak-tflops", "0.5"],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["error"] is None
    assert result["summary"] and "gap x" in result["summary"][0] and "summary failed" not in " ".join(result["summary"])
    assert "== summary ==" in proc.stdout
    env, rows = result["environment"], result["rows"]
    assert env["scale"] == "smoke" and env["device"] == "cpu" and env["elapsed_s"] > 0
    assert env["torch"] and env["diffusers"]

    # the table went to stdout too, with the final table last
    assert "== final table ==" in proc.stdout
    table = proc.stdout.split("== final table ==")[1]
    assert "s_step" in table and table.count("\n") >= len(rows)

    for r in rows:
        assert r["status"] in ("ok", "skipped"), r
        if r["status"] == "skipped":
            assert r["reason"], r  # every skip says why
            continue
        for key in ("s_step", "tflops", "dev_peak_mb", "host_peak_mb", "x_default"):
            if r[key] is not None:
                assert r[key] > 0, (key, r)
        assert r["host_peak_mb"] is not None and r["host_peak_mb"] > 0, r

    dit = [r for r in rows if r["group"] == "dit"]
    sizes = sorted({r["size"] for r in dit})
    assert len(sizes) == 2
    first = [r for r in dit if r["size"] == "32x32"]
    # default row per size, measured
    for s in sizes:
        d = [r for r in dit if r["size"] == s and r["name"] == "default"]
        assert len(d) == 1 and d[0]["status"] == "ok" and d[0]["s_step"] > 0 and d[0]["tflops"] > 0
        assert d[0]["dev_peak_mb"] > 0 and d[0]["extra"]["flops_per_step"] > 0
        assert d[0]["frac_peak"] > 0 and d[0]["x_default"] == 1
    # every memory mode present; on the CPU they all run (offload modes are no-ops there, fp8 really casts)
    for mode in MEMORY_MODES:
        m = [r for r in first if r["mode"] == mode and r["attention"] == "native" and not r["compile"]
             and r["branches"] == "batched"]
        assert m and all(r["status"] == "ok" for r in m), mode
    # every attention backend present: run or skipped with a reason
    for backend in ATTENTION:
        assert any(r["attention"] == backend for r in first), backend
    assert any(r["attention"] == "_native_math" and r["status"] == "ok" for r in first)
    # torch.compile on and branches one by one
    assert any(r["compile"] and r["status"] == "ok" for r in first)
    assert any(r["branches"] == "serial" and r["status"] == "ok" for r in first)

    # VAE per frame, both decode styles
    vae = [r for r in rows if r["group"] == "vae"]
    names = {r["name"].split(" (")[0].rsplit(" ", 2)[0] for r in vae}
    assert {"decode stream", "decode whole fp32"} <= {r["name"].split(" (")[0] for r in vae}, names
    assert all(r["status"] == "ok" and r["extra"]["ms_per_frame"] > 0 for r in vae)

    # baseline (official habits) vs ours, measured in the same run, through the engine's sampler
    pipe = {r["name"]: r for r in rows if r["group"] == "pipeline"}
    assert len(pipe) == 2 and all(r["status"] == "ok" for r in pipe.values())
    ours = next(r for n, r in pipe.items() if n.startswith("ours"))
    base = next(r for n, r in pipe.items() if n.startswith("official"))
    assert base["extra"]["windows"] >= 2 and ours["extra"]["windows"] >= 2
    assert base["extra"]["decode_held_mb"] > 0 and ours["extra"]["decode_held_mb"] == 0
    assert ours["extra"]["speedup_est_50_steps_s"] > 0 and ours["x_default"] > 0

    # encoders run at smoke size
    enc = [r for r in rows if r["group"] == "encoders"]
    assert len(enc) == 2 and all(r["status"] == "ok" for r in enc)


def test_bench_flop_model_matches_the_issue():
    """5 s at 480x832 = 2 windows x 50 steps x 3 branches ~ 85 PFLOP (issue 5); 107 s at 800 TFLOP/s."""
    import torch
    from bench.models import dit_flops
    from stableavatar.dit import StableAvatarDiT

    with torch.device("meta"):
        cfg = StableAvatarDiT().config
    f = dit_flops(cfg, 480, 832)
    assert f["tokens"] == 32760
    total = f["total"] * 2 * 50
    assert 83e15 < total < 88e15
    assert 0.6 < f["attention"] / f["total"] < 0.8  # attention dominates at 32 760 tokens
    assert dit_flops(cfg, 512, 512)["tokens"] == 21504
