"""Ablation at a fixed number of optimizer steps: how much does one config change buy?

    python scripts/ablate.py --steps 1435 --num-samples 2000 --name min_snr model.loss_weighting=min_snr

Trains `genbench train` with the given overrides for exactly --steps steps (no time budget, so the
result does not depend on how busy the machine is or on --threads), then scores --num-samples EMA
samples with the run's own sampler on the Fashion-MNIST extractor (scripts/benchlib.py), against the
training split. Changes that keep the cost of a step (learning rate, loss weighting, prediction
target, schedule) compare exactly at the step count an equal time budget gives the default; changes
that alter it (batch size, network) need the time-budgeted benchmarks (bench_diffusion.py etc.).
Appends one JSON record per call to --out/ablate.jsonl and writes a 64-image grid beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchlib import log, save_grid, score, setup, train_genbench
from genbench.data import fashion_mnist
from genbench.sample import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps of the run")
    parser.add_argument("--num-samples", type=int, default=2000, help="samples scored (default 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--name", required=True, help="label of this arm in the JSON and the grid's file name")
    parser.add_argument("--out", type=Path, default=Path("outputs/ablate"))
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of `genbench train` (default: the default model)")
    args = parser.parse_args()
    setup(args.threads, args.out)
    model, run = train_genbench(args.out / args.name, budget=None, seed=args.seed,
                                overrides=[*args.overrides, "trainer.max_time=null", f"trainer.max_steps={args.steps}"])
    images, img_per_s = generate(model, args.num_samples, 250, args.seed + 1)
    save_grid(images, args.out / f"{args.name}.png")
    record = {"name": args.name, "num_samples": args.num_samples, "threads": args.threads, **run,
              **model.sampling_info(), "img_per_s": img_per_s, **score(images, fashion_mnist())}
    log.info("%s", record)
    with open(args.out / "ablate.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
