"""One markdown row per run of the FIDs of its EMA choices (genbench eval eval.ema=true|0.05|0.09|0.15|false),
read from the records in each run's metrics.json at one sample count:

    python scripts/ema_table.py "GAN=outputs/gan15/gan=10000" "flow=outputs/ablate15/flow_b32=1000"

Where records at that count exist both with and without the likelihood, those without it are read."""

import sys

from genbench.records import load_records

print("| run | steps | samples | " + " | ".join(["warm-up decay (default)", "power 0.05", "power 0.09", "power 0.15", "raw weights"]) + " | protocol |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for label, run, n in [(a.split("=")[0], a.split("=")[1], int(a.split("=")[2])) for a in sys.argv[1:]]:
    _, recs = load_records(run)
    cells, pid, step = {}, set(), None
    chosen = [r for r in recs.values() if r.get("num_generated") == n]
    if any(r["protocol"]["likelihood_images"] == 0 for r in chosen):
        chosen = [r for r in chosen if r["protocol"]["likelihood_images"] == 0]
    for r in chosen:
        cells[str(r.get("ema"))] = r["metrics"]["fid"] if "metrics" in r else r.get("fid")
        pid.add(r["protocol"]["id"]); step = r.get("checkpoint_step")
    get = lambda key: f"{cells[key]:.1f}" if key in cells else "-"
    print(f"| {label} | {step} | {n} | {get('True')} | {get('0.05')} | {get('0.09')} | {get('0.15')} | {get('False')} | {', '.join(sorted(pid))} |")
