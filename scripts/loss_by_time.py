"""The flow-matching loss of trained runs at fixed times t: where along the path is each network good?

    python scripts/loss_by_time.py outputs/ablate15/flow_b32 outputs/ablate15/flow_b32_uniform --num-images 1000

For each run (EMA weights) and each t of --times, on the same --num-images test images with the same noise
eps for every run: the mean over images and dimensions of ||v_theta(x_t, t) - (eps - x_0)||^2, x_t = (1 - t) x_0
+ t eps (genbench.models.flow, Lipman et al. 2023 eq. 9), with its standard error over images. Part of each
number is the irreducible variance of eps - x_0 given x_t, the same for every run at a given t, so differences
between runs at one t are differences in how well each network learned that time; a network trained with a
density that rarely draws t (logit-normal near 0 and 1) shows it there. Writes loss_by_time.json (with the
runs' checkpoint steps, the machine and the commit) and loss_by_time.md to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra.utils import instantiate

from benchlib import log, setup, write_report
from genbench.checkpoint import load_checkpoint, load_model
from genbench.data import to_float
from genbench.models.flow import Flow


@torch.no_grad()
def loss_at(model: Flow, x_0: torch.Tensor, eps: torch.Tensor, t: float, batch_size: int) -> tuple[float, float]:
    """(mean, standard error over images) of the per-image mean squared velocity error at time t."""
    per_image = []
    for i in range(0, len(x_0), batch_size):
        x, e = x_0[i:i + batch_size], eps[i:i + batch_size]
        per_image.append(model.velocity_error(x, e, torch.full((len(x),), t)))
    err = torch.cat(per_image).double()
    return err.mean().item(), (err.std() / len(err) ** 0.5).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="`genbench train` folders of flow models")
    parser.add_argument("--times", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
    parser.add_argument("--num-images", type=int, default=1000, help="test images (the same for every run and t)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise eps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("outputs/loss_by_time"))
    args = parser.parse_args()
    setup(args.threads, args.out)
    if not all(0 <= t <= 1 for t in args.times):
        parser.error(f"--times {args.times}: every t must lie in [0, 1] (0 = data, 1 = noise)")
    models = {}
    for run in args.runs:
        model, state = load_model(run, ema=True)
        if not isinstance(model, Flow):
            parser.error(f"{run}: a {type(model).__name__} run; this script reads flow-matching runs (model=flow)")
        models[str(run)] = (model, state["step"])
    data = instantiate(load_checkpoint(args.runs[0])["config"]["data"], _convert_="all")  # the first run's data
    x_0 = to_float(data.split("test")[: args.num_images])
    eps = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(args.seed))
    cells = []
    for run, (model, step) in models.items():
        for t in args.times:
            mean, stderr = loss_at(model, x_0, eps, t, args.batch_size)
            log.info("%s t=%g: %.4f +- %.4f", run, t, mean, stderr)
            cells.append({"run": run, "checkpoint_step": step, "t": t, "loss": mean, "stderr": stderr})
    write_report({"num_images": len(x_0), "data": data.name, "seed": args.seed, "cells": cells}, args.out / "loss_by_time.json")
    rows = ["| t | " + " | ".join(models) + " |", "| ---: |" + " ---: |" * len(models)]
    for t in args.times:
        row = {c["run"]: c for c in cells if c["t"] == t}
        rows.append(f"| {t:g} | " + " | ".join(f"{row[r]['loss']:.4f} ± {row[r]['stderr']:.4f}" for r in models) + " |")
    (args.out / "loss_by_time.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
