"""How long `genbench eval` takes for N samples, and how that splits between sampling and features.

    python scripts/bench_eval.py --run-dir outputs/.../RUN --num-samples 10000 --out bench_eval.json

Without --run-dir it first trains `experiment=tiny` (seconds) into a temporary folder. The steps are
the ones genbench.evaluate runs, timed one by one:
1. sampling: genbench.sample.generate, batched;
2. metrics, first call: reference features extracted and cached, generated features, metric math;
3. metrics, second call: the reference read from the cache (every later evaluation of the run);
4. the generated images' features alone, through the same registered torch-fidelity extractor,
   so that the metric math is what is left of step 3.
Writes a JSON report and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", help="a `genbench train` folder; default: train experiment=tiny first")
    parser.add_argument("--num-samples", type=int, default=10000)
    parser.add_argument("--num-reference", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=250, help="generation batch")
    parser.add_argument("--feature-batch-size", type=int, default=200)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_eval.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    from genbench.checkpoint import load_model
    from genbench.evaluate import reference_images
    from genbench.extractors import default_extractor
    from genbench.metrics import FidelityMetrics, UInt8Images, to_rgb
    from genbench.sample import generate
    from genbench.trainer import resolve_device

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval."))
    run_dir = args.run_dir
    if run_dir is None:
        run_dir = str(tmp / "run")
        subprocess.run([sys.executable, "-m", "genbench.cli", "train", "experiment=tiny", "eval.at_end=false",
                        f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
    device = resolve_device(args.device)
    model, state = load_model(run_dir, ema=True, device=device)
    data = instantiate(state["config"]["data"], _convert_="all")
    reference = reference_images(data, "train", args.num_reference)
    metrics = FidelityMetrics(default_extractor(state["config"]["data"]["_target_"]), batch_size=args.feature_batch_size,
                              kid_subset_size=args.kid_subset_size, cache_dir=str(tmp / "cache"), cuda=device.type == "cuda")
    name = f"{data.name}-train"

    # 1. sampling
    t = time.perf_counter()
    generated, img_per_s = generate(model, args.num_samples, args.batch_size, seed=0)
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
    cls = FEATURE_EXTRACTORS_REGISTRY[metrics.extractor.name]
    layers = sorted({cls.get_default_feature_layer_for_metric(m) for m in metrics.metrics})
    extractor = create_feature_extractor(metrics.extractor.name, layers, cuda=device.type == "cuda", verbose=False,
                                         **metrics.extractor.fidelity_kwargs)
    loader = torch.utils.data.DataLoader(UInt8Images(to_rgb(generated)), batch_size=args.feature_batch_size)
    t = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            extractor(batch.to(device))
    features_s = time.perf_counter() - t

    report = {
        "num_samples": args.num_samples,
        "num_reference": len(reference),
        "device": str(device),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
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
        },
        "sampling_img_per_s": img_per_s,
        "feature_img_per_s": args.num_samples / features_s,
        "metrics": second,
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
