"""One markdown table of the cells of several fid_vs_steps.json reports (scripts/fid_vs_steps.py), in the
order given, for comparing runs whose reports share a protocol id:

    python scripts/steps_table.py docs/benchmarks/sota/fid_vs_steps_{default,uniform}.json > table.md

--only SAMPLER keeps one sampler's cells of the reports named after it (report:sampler)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="fid_vs_steps.json files, each optionally as FILE:SAMPLER")
    args = parser.parse_args()
    rows = ["| run | checkpoint step | sampler | steps | NFE | FID | protocol | report |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- | --- |"]
    for spec in args.reports:
        path, _, only = spec.partition(":")
        report = json.loads(Path(path).read_text())
        for cell in report["cells"]:
            if only and cell["sampler"] != only:
                continue
            rows.append(f"| {report['run_dir']} | {report['checkpoint_step']} | {cell['sampler']} | {cell['steps']} | "
                        f"{cell['nfe']} | {cell['fid']:.1f} | {cell['protocol']} | {Path(path).name} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
