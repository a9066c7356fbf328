"""What every equal-budget benchmark in scripts/ shares: train genbench under a time budget, draw
samples, score them with genbench's protocol, write JSON and grids. Not part of the package."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from genbench.data import ImageData
from genbench.metrics import FidelityMetrics

log = logging.getLogger("bench")
REFERENCE_NAME = "fashion_mnist-train"


def setup(threads: int, out: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", stream=sys.stdout)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)


def train_genbench(run_dir: Path, budget: float | None, seed: int, overrides: list[str]) -> tuple[torch.nn.Module, dict]:
    """`genbench train` as configured (no step limit by default) with trainer.max_time = budget seconds (None: as
    the overrides say); returns the EMA model and what the run did. No eval during or after training: the
    benchmark scores every side alike."""
    from hydra import compose, initialize_config_dir

    from genbench import CONF_DIR
    from genbench.checkpoint import load_model
    from genbench.train import train

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        budget_override = [] if budget is None else [f"trainer.max_time={budget}"]
        cfg = compose("train", overrides=[f"seed={seed}", *budget_override, "trainer.device=cpu", "trainer.progress=false",
                                          "~eval", *overrides])
    train(cfg, str(run_dir))
    model, state = load_model(run_dir, ema=True)
    return model, {"steps": state["step"], "train_time_s": state["train_time"], "images_seen": state["images_seen"],
                   "batch_size": cfg.trainer.batch_size, "overrides": overrides,
                   "parameters": sum(p.numel() for p in model.parameters())}


def fid_metrics() -> FidelityMetrics:
    """FID and KID on the Fashion-MNIST domain extractor: the same scorer for every side."""
    return FidelityMetrics(extractor="fmnist-cnn", metrics=("fid", "kid"), kid_subset_size=500)


def score(images: torch.Tensor, data: ImageData, metrics: FidelityMetrics | None = None) -> dict[str, float]:
    """Metrics of uint8 samples against the training split (features cached on disk)."""
    return (metrics or fid_metrics()).compute(images, data.train, reference_name=REFERENCE_NAME)


def save_grid(images: torch.Tensor, path: Path, n: int = 64) -> None:
    save_image(make_grid(images[:n].float() / 255, nrow=int(n**0.5), padding=2), path)


def write_report(report: dict, path: Path) -> None:
    report = {**report, "hardware": {"cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                                     "torch": torch.__version__}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    print(json.dumps(report, indent=2))
