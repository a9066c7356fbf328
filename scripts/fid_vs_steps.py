"""FID against sampling steps for one trained run of the diffusion family (DDPM ancestral, DDIM,
DPM-Solver++(2M) and (3M)) or of the flow family (Euler, Heun, Adams-Bashforth 3): every sampler of the
run's family unless --samplers names some.

    python scripts/fid_vs_steps.py outputs/<run> --steps 10 20 50 100 1000 --num-samples 1000
    python scripts/fid_vs_steps.py outputs/<run> --samplers dpm_solver_3m dpm_solver_3m:logsnr --steps 10

A diffusion sampler's name may end in :<spacing> (leading, trailing, linspace, karras, logsnr) to run it on
another time grid than its default; a flow sampler's in :<shift> (e.g. flow_heun:3), Esser et al.'s warp of
its grid (shift > 1 puts more steps at high noise, < 1 near the data).

A step is one network evaluation for every sampler but Heun (two, one on its last step) and
Adams-Bashforth 3 (one more in all);
fid_vs_steps.json records each cell's NFE.

Every cell samples --num-samples images from the run's EMA weights with the same seed and scores
them under genbench's evaluation protocol (conf/eval through scripts/benchlib.py: the reference
protocol's 10,000 training images, KID subsets of 1,000, the run's data and its extractor), so cells
differ only by sampler and step count. FID is biased upwards at small sample counts: compare cells of
one table (one protocol id), not with FIDs at other counts. Writes fid_vs_steps.json (with the
protocol) and fid_vs_steps.md to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra.utils import instantiate

from benchlib import add_common_args, log, score, setup, write_report
from benchlib import protocol as bench_protocol
from genbench.checkpoint import load_checkpoint, load_model
from genbench.generate import generate
from genbench.samplers import FlowSampler

SAMPLERS = {
    "ddpm": {"_target_": "genbench.samplers.DDPM", "variance": "beta_tilde", "spacing": "leading"},
    "ddim": {"_target_": "genbench.samplers.DDIM", "eta": 0.0, "spacing": "leading"},
    "dpm_solver": {"_target_": "genbench.samplers.DPMSolverPP2M", "spacing": "trailing"},
    "dpm_solver_3m": {"_target_": "genbench.samplers.DPMSolverPP3M", "spacing": "trailing"},  # conf/sampler/dpm_solver_3m.yaml
}
FLOW_SAMPLERS = {  # conf/sampler/flow/
    "flow_euler": {"_target_": "genbench.samplers.FlowEuler", "shift": 1.0},
    "flow_heun": {"_target_": "genbench.samplers.FlowHeun", "shift": 1.0},
    "flow_ab3": {"_target_": "genbench.samplers.FlowAdamsBashforth", "order": 3, "shift": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100, 1000])
    parser.add_argument("--samplers", nargs="+", default=None,
                        help=f"any of {', '.join([*SAMPLERS, *FLOW_SAMPLERS])}, a diffusion one with :<spacing> "
                             "(e.g. dpm_solver_3m:logsnr), a flow one with :<shift> (e.g. flow_heun:3); "
                             "default: every sampler of the run's family")
    add_common_args(parser, "<run_dir>/fid_vs_steps", num_samples=1000)
    parser.add_argument("overrides", nargs="*", help="eval.* overrides of the protocol (default: conf/eval's)")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    out = args.run_dir / "fid_vs_steps" if str(args.out) == "<run_dir>/fid_vs_steps" else args.out
    setup(args.threads, out)
    protocol = bench_protocol(args.num_samples, args.overrides)  # conf/eval: the reference protocol, at --num-samples
    data = instantiate(load_checkpoint(args.run_dir)["config"]["data"], _convert_="all")  # the run's own data
    family = FLOW_SAMPLERS if isinstance(load_model(args.run_dir)[0].sampler, FlowSampler) else SAMPLERS
    args.samplers = args.samplers or list(family)
    configs = {}
    for name in args.samplers:
        base, _, grid = name.partition(":")
        if base not in family:
            parser.error(f"--samplers {name}: this run takes {', '.join(family)}, each optionally with "
                         + (":<shift>" if family is FLOW_SAMPLERS else ":<spacing>"))
        if grid and family is FLOW_SAMPLERS:
            try:
                grid_option = {"shift": float(grid)}
            except ValueError:
                parser.error(f"--samplers {name}: a flow sampler's suffix is its time shift, a number, e.g. {base}:3")
        else:
            grid_option = {"spacing": grid} if grid else {}
        configs[name] = {**family[base], **grid_option}
    cells = []
    for name in args.samplers:
        for steps in args.steps:
            model, state = load_model(args.run_dir, ema=True, sampler={**configs[name], "steps": steps})
            images, img_per_s = generate(model, protocol.num_samples, protocol.batch_size, args.seed)
            cell = {"sampler": name, "steps": steps, "nfe": model.sampling_info()["nfe"], "img_per_s": img_per_s,
                    **score(images, data, protocol)}
            log.info("%s %d steps: fid=%.4g", name, steps, cell["fid"])
            cells.append(cell)
    report = {"run_dir": str(args.run_dir), "checkpoint_step": state["step"], "num_samples": protocol.num_samples,
              "seed": args.seed, "cells": cells}
    write_report(report, out / "fid_vs_steps.json")
    header = "| sampler | " + " | ".join(f"{s} steps" for s in args.steps) + " |"
    rows = [header, "|" + " --- |" * (len(args.steps) + 1)]
    for name in args.samplers:
        row = {c["steps"]: c for c in cells if c["sampler"] == name}  # NFE in brackets where it is not the steps
        rows.append(f"| {name} | " + " | ".join(f"{row[s]['fid']:.1f}" + (f" ({row[s]['nfe']} NFE)" if row[s]["nfe"] != s else "")
                                                   for s in args.steps) + " |")
    (out / "fid_vs_steps.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
