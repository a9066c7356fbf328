"""`genbench compare SWEEP_DIR|RUN_DIR...`: one table, up to seven plots and four verdicts from finished runs.

1. Find the runs (a sweep's missing jobs are named).
2. Read each run's headline record (and the records re-scoring its weights with other samplers), .hydra/ and
   tb/; a run that cannot be read is skipped, with the reason. With --pace FILE, time each run at the pace
   measured there (training FLOPs / its family's rate) instead of by its own clock.
3. Group the runs into variants (same overrides, protocol, sampler and NFE; seeds averaged), with the total
   cost of training plus generating runs.COST_IMAGES (10,000) images.
4. Check each run's record against its own tb/, and that it has a memorisation panel.
5. Judge the trilemma's claims on the runs of the main protocol, and find where their FID-against-compute
   curves cross (training FLOPs and seconds).
6. FID against NFE from the records beside the headlines.
7. Write compare.csv, compare_runs.csv, crossings.csv, fid_vs_nfe.csv, the PNG plots and compare.md.
The parts live in genbench.report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genbench.report import crossings, nfe, pace, plots, runs, verdicts, writers
from genbench.runtime import resolve_device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="genbench compare", description="Compare finished runs: compare.md, compare.csv, compare_runs.csv and "
        "PNG plots, one row per model variant, each number mean ± std over seeds (total cost: training plus "
        f"generating {runs.COST_IMAGES:,} images), and a verdict on each claim of the generative learning trilemma; "
        "crossings.csv: where the FID-against-training-compute curves cross; fid_vs_nfe.csv/.png: FID against NFE "
        "from records re-scoring a run's weights (genbench eval run_dir=RUN sampler=ddim sampler.steps=K ...); "
        "memorisation.png: each variant's memorisation panel.")
    parser.add_argument("paths", nargs="+", help="sweep folders (multirun/<date>/<time>-<uid>) and/or run folders")
    parser.add_argument("-o", "--out", type=Path, help="output folder; default: the folder given, if one, else ./compare")
    parser.add_argument("--grid-samples", type=int, default=16, help="samples per variant in samples.png (0: no grid)")
    parser.add_argument("--grid-seed", type=int, default=0, help="seed of the fixed noise of samples.png")
    parser.add_argument("--pace", type=Path, help="a pace file (python scripts/trilemma.py --measure-pace FILE): training "
                        "seconds become training FLOPs / each family's rate there, as if every run had the machine "
                        "it measured to itself")
    parser.add_argument("--device", default="cpu", help="where samples.png is drawn: cpu, cuda, cuda:1, auto")
    args = parser.parse_args(argv)
    if args.grid_samples < 0:
        parser.error(f"--grid-samples={args.grid_samples} must be 0 or more")
    try:
        device = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        why = "no CUDA device is visible here" if args.device.startswith("cuda") else str(e).splitlines()[0]
        parser.error(f"--device={args.device}: {why}; use --device cpu or auto")
    try:
        paced = pace.read_pace(args.pace) if args.pace else None
    except pace.PaceError as e:
        parser.error(f"--pace {e}")
    out = args.out or (Path(args.paths[0]) if len(args.paths) == 1 and Path(args.paths[0]).is_dir() else Path("compare"))
    command = "genbench compare " + " ".join(sys.argv[1:] if argv is None else argv)

    # 1. find the runs
    dirs, problems = runs.find_runs(args.paths)
    # 2. read them
    found, failed, unread = runs.read_runs(dirs)
    problems += unread
    if paced:
        problems += pace.apply_pace(found, paced)
    if not found:
        print("genbench compare: error: no run could be compared:\n  " +
              "\n  ".join(problems or [f"no runs under {' '.join(args.paths)}"]), file=sys.stderr)
        raise SystemExit(2)
    # 3. variants and their statistics
    variants, duplicates = runs.group_variants(found)
    problems += duplicates
    # 4. each record against its own tb/; each variant's memorisation panel
    problems += [p for r in found for p in runs.suspect(r)]
    problems += plots.memorisation_runs(variants)[1]
    # 5. verdicts and crossings, on the protocol most runs share
    main_protocol = runs.main_protocol(variants)
    main_variants = [v for v in variants if v.protocol["id"] == main_protocol]
    judged = verdicts.verdicts(main_variants, runs.failures_by_family(failed))
    pairs = crossings.compare_curves(main_variants, "flops") + crossings.compare_curves(main_variants, "seconds")
    # 6. FID against NFE
    nfe_rows = nfe.nfe_table(variants)
    # 7. files
    try:
        out.mkdir(parents=True, exist_ok=True)
        writers.write_csvs(variants, out, pairs, nfe_rows)
        written = plots.plot_all(variants, out, args.grid_samples, args.grid_seed, device, nfe_rows)
        writers.write_text(out / "compare.md", writers.markdown(variants, judged, main_protocol, problems, command, written,
                                                                pairs, nfe_rows, paced))
    except OSError as e:  # an unwritable or full output folder
        print(f"genbench compare: error: cannot write into {out}: {str(e).splitlines()[0]}; pick another with -o",
              file=sys.stderr)
        raise SystemExit(2) from None
    for p in problems:
        print(f"genbench compare: warning: {p}", file=sys.stderr)
    print(f"wrote {out / 'compare.md'}, compare.csv, compare_runs.csv, crossings.csv, fid_vs_nfe.csv and {len(written)} "
          f"plots: {len(found)} runs, "
          f"{len(variants)} variants, {len(problems)} warnings")
