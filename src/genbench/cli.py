"""`genbench VERB [hydra overrides]`: strips the verb and hands over to that verb's Hydra app."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

VERBS = {
    "train": ("genbench.train", "train a model: genbench train model=diffusion|gan|vae [overrides]"),
    "sample": ("genbench.sample", "write samples from a run: genbench sample run_dir=DIR num_samples=N"),
    "eval": ("genbench.evaluate", "score a run: genbench eval run_dir=DIR"),
    "compare": ("genbench.compare", "tables, plots and verdicts over runs: genbench compare SWEEP_DIR|RUN_DIR... (--help)"),
}
NEEDS_RUN_DIR = {"sample", "eval"}

USAGE = "usage: genbench {" + ",".join(VERBS) + "} [hydra overrides | paths]\n\nverbs:\n" + "\n".join(
    f"  {verb:<7} {text}" for verb, (_, text) in VERBS.items()
) + "\n\ntrain, sample and eval take Hydra's own --help, --cfg job and -m/--multirun."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"genbench: unknown verb {verb!r}\n{USAGE}", file=sys.stderr)
        return 2
    asks_help = any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "--info", "-i") or a.startswith("--info") for a in rest)
    if verb in NEEDS_RUN_DIR and not asks_help and not any(a.startswith("run_dir=") for a in rest):
        print(f"genbench {verb}: error: run_dir= is required: the folder of a `genbench train` run "
              "(e.g. run_dir=outputs/2026-01-31/12-00-00-ab12cd)", file=sys.stderr)
        return 2
    if verb in NEEDS_RUN_DIR and not asks_help:
        run_dir = next(a for a in rest if a.startswith("run_dir=")).split("=", 1)[1]
        if not (Path(run_dir) / "checkpoints" / "last.pt").is_file():
            print(f"genbench {verb}: error: run_dir={run_dir} holds no checkpoints/last.pt; "
                  "pass the folder of a `genbench train` run", file=sys.stderr)
            return 2
    # OpenMP threads that sleep instead of spin while they wait: on a laptop or a shared 2-core box, a
    # spinning thread competing with other processes made a training step 9x slower in our measurement
    # (scripts/bench_threads.py). Set before torch loads; an explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    module = importlib.import_module(VERBS[verb][0])
    sys.argv = [f"genbench {verb}", *rest]
    module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
