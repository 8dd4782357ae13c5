"""What the load-time weight checks (weights.checked: floating point, finite) cost, beside what they guard.

    PYTHONPATH=backend python bench/weight_checks.py [--gib 1]

Prints, in one run: the tiny tree's load time with the checks against the checks alone, the checks' throughput on
a large bf16 and float32 tensor (the real files' dtypes), the element-wise test they replace, and the estimate
for the real ~20 GB of weights (the bytes of each real file come from its known parameter count).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from stableavatar import memory
from stableavatar.checkpoints import locate
from stableavatar.weights import checked, read_state_dict

REPO = Path(__file__).resolve().parent.parent
# bytes the checks read in a real tree: every tensor the loaders use (CLIP: its vision tower only), from the
# parameter counts memory.py keeps for the real model
REAL_BYTES = {"DiT (bf16 .pt)": memory.DIT_PARAMS * 2, "umT5-XXL (bf16)": memory.T5_BYTES,
              "CLIP ViT-H vision (fp32)": memory.CLIP_BYTES, "VAE (fp32)": memory.VAE_PARAMS * 4,
              "wav2vec2 (fp32)": memory.WAV2VEC_PARAMS * 4}


def _time(fn, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of the throughput tensors")
    args = ap.parse_args(argv)
    tree = locate(REPO / "tests" / "data" / "parity" / "checkpoints")
    files = [tree.files["vae"], tree.files["t5"], tree.files["clip"], *tree.transformers.values()]
    sds = {f.name: read_state_dict(f) for f in files}
    n_bytes = sum(t.numel() * t.element_size() for sd in sds.values() for t in sd.values())
    load = _time(lambda: [read_state_dict(f) for f in files])
    check = _time(lambda: [checked(k, t, f) for f, sd in zip(files, sds.values()) for k, t in sd.items()])
    print(f"tiny tree: {n_bytes / 1e6:.1f} MB in {sum(map(len, sds.values()))} tensors; opening them (memory-mapped, "
          f"the baseline) {load * 1e3:.1f} ms, checking them {check * 1e3:.1f} ms")
    print(f"torch threads: {torch.get_num_threads()}")
    rates = {}
    for dtype in (torch.bfloat16, torch.float32):
        big = torch.randn(int(args.gib * 2**30 / torch.tensor([], dtype=dtype).element_size())).to(dtype)
        ours = _time(lambda: checked("t", big, "bench"))  # noqa: B023 - timed now, in this iteration
        naive = _time(lambda: bool(torch.isfinite(big).all()), repeat=1)  # noqa: B023
        rates[dtype] = big.numel() * big.element_size() / ours
        print(f"{str(dtype):15s} checks: {rates[dtype] / 1e9:6.1f} GB/s   element-wise isfinite().all(): "
              f"{big.numel() * big.element_size() / naive / 1e9:5.2f} GB/s")
    total = 0.0
    for name, nbytes in REAL_BYTES.items():
        s = nbytes / rates[torch.bfloat16 if "bf16" in name else torch.float32]
        total += s
        print(f"real {name:26s} {nbytes / 1e9:5.2f} GB -> {s:5.2f} s of checks (data in memory)")
    print(f"real tree total: {sum(REAL_BYTES.values()) / 1e9:.1f} GB -> {total:.1f} s of checks; reading the same "
          f"bytes from a 2 GB/s NVMe drive takes {sum(REAL_BYTES.values()) / 2e9:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
