"""Ablation at a fixed number of optimizer steps or training FLOPs: how much does one config change buy?

    python scripts/ablate.py --steps 1523 --name uniform model.loss_weighting=uniform
    python scripts/ablate.py --flops 5.76e13 --name r3gan model=r3gan

Trains `genbench train` with the given overrides for exactly --steps steps, or until --flops training
FLOPs (trainer.max_flops, genbench.compute's count) -- no time budget, so the result does not depend on
how busy the machine is or on --threads -- then scores --num-samples EMA
samples with the run's own sampler under genbench's evaluation protocol (conf/eval through
scripts/benchlib.py: the reference protocol's 10,000 training images, KID subsets of 1,000, the data's
extractor); each record carries the protocol and its id. Changes that keep the cost of an image (learning
rate, loss weighting, prediction target, schedule, batch size at equal images seen) compare exactly at equal
steps x batch; changes that alter it (network, penalties such as R3GAN's) compare at equal --flops.
Appends one JSON record per call to --out/ablate.jsonl, writes a 64-image grid beside it, and rewrites
--out/ablate.md, the table of every record in ablate.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchlib import add_common_args, is_eval_override, load_data, log, score, setup, train_genbench, trained_run
from benchlib import protocol as bench_protocol
from genbench.generate import generate
from genbench.runtime import git_commit, machine_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimizer steps of the run")
    budget.add_argument("--flops", type=float, help="training FLOPs of the run (trainer.max_flops)")
    budget.add_argument("--run", type=Path, help="score this finished `genbench train` folder instead of training "
                                                 "(the overrides then say how it was trained)")
    parser.add_argument("--name", required=True, help="label of this arm in the JSON and the grid's file name")
    add_common_args(parser, "outputs/ablate", num_samples=2000)
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides of `genbench train` (default: the default model); eval.* ones change the protocol")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    setup(args.threads, args.out)
    protocol = bench_protocol(args.num_samples, args.overrides)  # conf/eval: the reference protocol, at --num-samples
    if args.run:
        model, run = trained_run(args.run, [o for o in args.overrides if not is_eval_override(o)])
    else:
        model, run = train_genbench(args.out / args.name, budget=None, seed=args.seed,
                                    overrides=[*args.overrides, "trainer.max_time=null", f"trainer.max_steps={args.steps}"
                                               if args.steps else f"trainer.max_flops={args.flops:g}"])
    images, img_per_s = generate(model, protocol.num_samples, protocol.batch_size, args.seed + 1)
    record = {"name": args.name, "num_samples": protocol.num_samples, "threads": args.threads, **run,
              **model.sampling_info(), "img_per_s": img_per_s,
              **score(images, load_data(args.overrides), protocol, args.name, args.out),
              "machine": machine_record("cpu"), "git": git_commit()}  # `protocol`: the full settings and id, per line
    log.info("%s: fid=%.4g", args.name, record["fid"])
    with open(args.out / "ablate.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    (args.out / "ablate.md").write_text(table([json.loads(line) for line in open(args.out / "ablate.jsonl")]))


def table(records: list[dict]) -> str:
    """Markdown: one row per arm, in the order they ran."""
    rows = ["| arm | overrides | steps x batch | training FLOPs | sampler (NFE) | FID | precision / recall | memorised | protocol |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for r in records:
        protocol = r["protocol"]["id"] if isinstance(r.get("protocol"), dict) else r.get("protocol", "-")
        flops = (r.get("compute") or {}).get("train_flops")
        shown = [o for o in r["overrides"] if not o.startswith(("threads=", "trainer.max_time=", "trainer.max_steps=", "trainer.max_flops="))]
        memorised = (r.get("memorisation") or {}).get("fraction_closer")
        rows.append(f"| {r['name']} | {' '.join(f'`{o}`' for o in shown) or '(default)'} | {r['steps']:,} x {r['batch_size']} | "
                    f"{flops:.3g} | {r['sampler']} ({r['nfe']}) | {r['fid']:.1f} | {r.get('precision', float('nan')):.2f} / "
                    f"{r.get('recall', float('nan')):.2f} | " + (f"{memorised:.2%}" if memorised is not None else "-") + f" | {protocol} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
