"""How long `genbench eval` takes for N samples, and how that splits between sampling and features.

    python scripts/bench_eval.py --run-dir outputs/.../RUN --num-samples 10000 --out bench_eval.json

Without --run-dir it first trains `experiment=smoke` (seconds) into a temporary folder. The steps are
the ones genbench.protocol runs, timed one by one, under the protocol of conf/eval (the reference
protocol unless Hydra overrides such as eval.num_reference=... follow the flags):
1. sampling: genbench.generate.generate, batched;
2. metrics, first call: reference features extracted and cached, generated features, metric math;
3. metrics, second call: the reference read from the cache (every later evaluation of the run);
4. the generated images' features alone, through the protocol's extractor, so that the metric math
   is what is left of step 3;
5. memorisation: nearest training images of the samples and of the test images (features cached).
Writes a JSON report (with the protocol and its id, and the machine) and prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a `genbench train` folder; default: train experiment=smoke first")
    parser.add_argument("--num-samples", type=int, default=None, help="default: eval.num_samples (10000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_eval.json")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the protocol, e.g. eval.num_reference=5000")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    torch.set_num_threads(args.threads)

    from benchlib import protocol as bench_protocol
    from genbench.checkpoint import load_model
    from genbench.generate import generate
    from genbench.runtime import machine_record, resolve_device

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval."))
    run_dir = args.run_dir
    if run_dir is None:
        run_dir = str(tmp / "run")
        subprocess.run([sys.executable, "-m", "genbench.cli", "train", "experiment=smoke", "eval.at_end=false",
                        f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
    device = resolve_device(args.device)
    protocol = bench_protocol(args.num_samples, [f"eval.cache_dir={tmp / 'cache'}", *args.overrides])  # a cold cache
    model, state = load_model(run_dir, ema=protocol.ema, device=device)
    data = instantiate(state["config"]["data"], _convert_="all")
    metrics, reference = protocol.prepare(data, device)
    name = f"{data.name}-{protocol.reference_split}"

    # 1. sampling
    t = time.perf_counter()
    generated, img_per_s = generate(model, protocol.num_samples, protocol.batch_size, seed=protocol.seed)
    sampling_s = time.perf_counter() - t
    # 2. metrics with the reference extracted (and cached)
    t = time.perf_counter()
    first = metrics.compute(generated, reference, name)
    uncached_s = time.perf_counter() - t
    # 3. metrics with the cached reference
    t = time.perf_counter()
    second = metrics.compute(generated, reference, name)
    cached_s = time.perf_counter() - t
    assert first == second, "the cached reference changed the numbers"
    # 4. the generated images' features alone
    t = time.perf_counter()
    metrics.features(generated)
    features_s = time.perf_counter() - t
    # 5. memorisation (training and test features extracted once, then cached)
    t = time.perf_counter()
    memorisation, _ = protocol.memorise(generated, data, device)
    memorisation_s = time.perf_counter() - t

    report = {
        "num_samples": protocol.num_samples,
        "num_reference": len(reference),
        "protocol": protocol.describe(data, metrics.extractor.name, len(generated), len(reference)),
        "device": str(device),
        "threads": args.threads,
        "machine": machine_record(device),
        "model": {"family": state["config"]["model"]["_target_"], **model.sampling_info(),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "feature_extractor": metrics.extractor.name,
        "eval_s": sampling_s + cached_s,
        "eval_first_time_s": sampling_s + uncached_s,
        "split_s": {
            "sampling": sampling_s,
            "generated_features": features_s,
            "metric_math": cached_s - features_s,
            "reference_features_once": uncached_s - cached_s,
            "memorisation_first_time": memorisation_s,
        },
        "sampling_img_per_s": img_per_s,
        "feature_img_per_s": protocol.num_samples / features_s,
        "metrics": second,
        "memorisation": memorisation,
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
