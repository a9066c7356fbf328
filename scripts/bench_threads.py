"""Training-step time of the default diffusion UNet under OpenMP's two wait policies, optionally with
competing CPU load, to back the OMP_WAIT_POLICY=PASSIVE default that genbench's CLI sets.

    python scripts/bench_threads.py --load 2 --out outputs/bench_threads.json

Each measurement runs in a fresh process (the policy is read when torch loads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

STEP = r"""
import time, torch
from genbench.networks.unet import UNet
net = UNet((1, 32, 32), 64, (1, 1, 2), 1, (8,), patch_size=2)
opt = torch.optim.Adam(net.parameters(), 1e-3)
x, t = torch.randn(128, 1, 32, 32), torch.randint(0, 1000, (128,))
times = []
for i in range(6):
    t0 = time.perf_counter()
    loss = (net(x, t) - x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(sorted(times[1:])[2])
"""


def burn(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=int, default=2, help="busy-looping processes competing for the CPU")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_threads.json"))
    args = parser.parse_args()
    results = {}
    for load in sorted({0, args.load}):
        burners = [mp.Process(target=burn, args=(600,)) for _ in range(load)]
        for b in burners:
            b.start()
        try:
            for policy in ("ACTIVE", "PASSIVE"):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                out = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True, text=True, check=True)
                results[f"load{load}_{policy.lower()}_s_per_step"] = float(out.stdout.strip())
        finally:
            for b in burners:
                b.terminate()
    report = {"results": results, "cpus": os.cpu_count(), "batch": 128, "model": "default diffusion UNet (3.1M params)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
