"""One markdown row per run of the FID of each choice of weights it was evaluated with (`genbench eval
eval.ema=true|false|<sigma_rel>`, the last for the power EMAs kept by trainer.ema_profiles), read from the
records in each run's metrics.json at one sample count:

    python scripts/ema_table.py "GAN=outputs/gan15/gan=10000" "flow=outputs/ablate15/flow_b32=1000"

Where a run has records at that count both with and without the likelihood, those without it are read
(the EMA comparison runs skip it). Columns: the Trainer's own EMA, each kept profile, the raw weights."""

from __future__ import annotations

import argparse

from genbench.records import load_records


def weights_of(run_dir: str, num_samples: int) -> tuple[dict[str, float], set[str], int | None]:
    """({ema choice: FID}, protocol ids, checkpoint step) of a run's records at `num_samples`."""
    _, records = load_records(run_dir)
    chosen = [r for r in records.values() if r.get("num_generated") == num_samples]
    if any(r["protocol"]["likelihood_images"] == 0 for r in chosen):
        chosen = [r for r in chosen if r["protocol"]["likelihood_images"] == 0]
    fids = {str(r.get("ema")): r["metrics"]["fid"] for r in chosen}
    return fids, {r["protocol"]["id"] for r in chosen}, next((r.get("checkpoint_step") for r in chosen), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR=NUM_SAMPLES")
    args = parser.parse_args()
    rows = []
    for spec in args.runs:
        label, run_dir, n = spec.rsplit("=", 2)
        rows.append((label, int(n), *weights_of(run_dir, int(n))))
    profiles = sorted({k for _, _, fids, _, _ in rows for k in fids if k not in ("True", "False")}, key=float)
    columns = [("True", "warm-up decay (default)"), *[(p, f"power {p}") for p in profiles], ("False", "raw weights")]
    print("| run | steps | samples | " + " | ".join(name for _, name in columns) + " | protocol |")
    print("| --- | ---: | ---: | " + "---: | " * len(columns) + "--- |")
    for label, n, fids, pids, step in rows:
        cells = " | ".join(f"{fids[k]:.1f}" if k in fids else "-" for k, _ in columns)
        print(f"| {label} | {step} | {n} | {cells} | {', '.join(sorted(pids))} |")


if __name__ == "__main__":
    main()
