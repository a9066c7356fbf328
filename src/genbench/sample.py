"""`genbench sample run_dir=D`: PNGs, grid.png and samples.npz from D's checkpoint."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchvision.utils import save_image

from genbench import CONF_DIR
from genbench.checkpoint import load_model, weights_name
from genbench.data import image_grid
from genbench.generate import generate
from genbench.runtime import resolve_device
from genbench.validate import check_positive, one_line_errors


def write_samples(images: torch.Tensor, folder: Path, info: dict) -> None:
    """Write N PNGs, grid.png, samples.npz and info.json to a temporary folder, then rename it to `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    for i, img in enumerate(images):
        array = img.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(tmp / f"{i:06d}.png")
    save_image(image_grid(images), tmp / "grid.png")
    np.savez_compressed(tmp / "samples.npz", images=images.numpy())
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


@hydra.main(config_path=CONF_DIR, config_name="sample", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    check_positive("num_samples", cfg.num_samples)
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True) if cfg.get("sampler") else None
    model, state = load_model(cfg.run_dir, ema=cfg.ema, device=resolve_device(cfg.device), sampler=sampler)
    images, img_per_s = generate(model, cfg.num_samples, cfg.batch_size, cfg.seed)
    info = model.sampling_info()
    tag = f"_{info['sampler'].lower()}{info['nfe']}" if "sampler" in info else ""
    name = cfg.name or f"{weights_name(cfg.ema)}_step{state['step']}{tag}_seed{cfg.seed}_n{cfg.num_samples}"
    folder = Path(cfg.run_dir) / "samples" / name
    info = {"step": state["step"], "ema": cfg.ema, "seed": cfg.seed, "num_samples": cfg.num_samples,
            "img_per_s": img_per_s, **info}
    write_samples(images, folder, info)
    print(f"wrote {cfg.num_samples} samples to {folder} ({img_per_s:.1f} img/s)")
