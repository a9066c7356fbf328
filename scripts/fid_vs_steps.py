"""FID against sampling steps for one trained diffusion run: DDPM (ancestral), DDIM and DPM-Solver++(2M).

    python scripts/fid_vs_steps.py outputs/<run> --steps 10 20 50 100 1000 --num-samples 1000

Every cell samples --num-samples images from the run's EMA weights with the same seed and scores
them against the training split on the run's extractor (genbench.metrics), so cells differ only
by sampler and step count. FID is biased upwards at small sample counts: compare cells of one
table, not with FIDs at other counts. Writes fid_vs_steps.json and fid_vs_steps.md to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchlib import log, score, setup, write_report
from genbench.checkpoint import load_model
from genbench.data import fashion_mnist
from genbench.sample import generate

SAMPLERS = {
    "ddpm": {"_target_": "genbench.samplers.DDPM", "variance": "beta_tilde", "spacing": "leading"},
    "ddim": {"_target_": "genbench.samplers.DDIM", "eta": 0.0, "spacing": "leading"},
    "dpm_solver": {"_target_": "genbench.samplers.DPMSolverPP2M", "spacing": "trailing"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=None, help="default: <run_dir>/fid_vs_steps")
    args = parser.parse_args()
    out = args.out or args.run_dir / "fid_vs_steps"
    setup(args.threads, out)
    data = fashion_mnist()
    cells = []
    for name in args.samplers:
        for steps in args.steps:
            model, state = load_model(args.run_dir, ema=True, sampler={**SAMPLERS[name], "steps": steps})
            images, img_per_s = generate(model, args.num_samples, 250, args.seed)
            cell = {"sampler": name, "steps": steps, "nfe": model.sampling_info()["nfe"], "img_per_s": img_per_s,
                    **score(images, data)}
            log.info("%s", cell)
            cells.append(cell)
    report = {"run_dir": str(args.run_dir), "checkpoint_step": state["step"], "num_samples": args.num_samples,
              "seed": args.seed, "reference": "fashion_mnist train split, fmnist-cnn extractor", "cells": cells}
    write_report(report, out / "fid_vs_steps.json")
    header = "| sampler | " + " | ".join(f"{s} steps" for s in args.steps) + " |"
    rows = [header, "|" + " --- |" * (len(args.steps) + 1)]
    for name in args.samplers:
        fids = {c["steps"]: c["fid"] for c in cells if c["sampler"] == name}
        rows.append(f"| {name} | " + " | ".join(f"{fids[s]:.1f}" for s in args.steps) + " |")
    (out / "fid_vs_steps.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
