"""A run's record without its weights: what `genbench compare` reads, small enough to keep in git.

A sweep longer than one machine's lease (the flagship comparison is ~7 hours on 2 cores) loses its outputs/
between sessions; its archived runs are kept, and compare reads an archived run as it reads the run itself:

    .hydra/{config,overrides}.yaml         copied: model, family, seed, overrides
    .hydra/hydra.yaml                      the two keys compare reads (the config choices, the sweep job number),
                                           without the run's absolute paths
    metrics.json                           copied: every record (the headline, FID-against-NFE cells)
    eval/memorisation.png                  copied: the headline evaluation's memorisation panel
    scalars.csv                            tb/'s scalars (what read_scalars returns: one value per tag and step,
                                           with its wall time) as text, at most SCALAR_POINTS per tag (thin):
                                           every evaluation's step is kept, so the FID curves and their seconds
                                           and FLOPs read back exactly; grids and HParams are dropped
    eval/fixed_noise-n<N>-seed<S>.png      samples from fixed noise (grid_png), drawn from the EMA weights now
                                           (compare's defaults: 16 samples, seed 0), for compare's samples.png

An archive is written into a temporary folder beside its destination and renamed over it, so a killed archive
never leaves half a run where compare would read it.
"""

from __future__ import annotations

import bisect
import shutil
import tempfile
from pathlib import Path

import torch

from genbench.records import METRICS_FILE, headline_record
from genbench.report.events import SCALARS_FILE, Scalars, run_scalars, write_scalars
from genbench.report.runs import hydra_keys

SCALAR_POINTS = 256  # per tag in an archived scalars.csv, besides the evaluation steps (a VAE logs 2,000 points a tag)
COPIED = (".hydra/config.yaml", ".hydra/overrides.yaml", METRICS_FILE, "eval/memorisation.png")


def grid_png(n: int, seed: int) -> Path:
    """Where an archived run keeps `n` samples from the fixed noise of torch.Generator seed `seed`."""
    return Path("eval") / f"fixed_noise-n{n}-seed{seed}.png"


def fixed_noise_grid(run: Path, n: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """n samples of the run's EMA weights with its own sampler, the noise drawn from torch.Generator seed `seed`,
    as one (3, H, W) grid in [0, 1] (one pixel of white between images)."""
    from genbench.checkpoint import load_model
    from genbench.data import image_grid

    model, _ = load_model(run, device=device)
    with torch.no_grad():
        images = model.sample(n, generator=torch.Generator().manual_seed(seed)).float().cpu()
    return image_grid(images, padding=1, pad_value=1.0)


def save_png(grid: torch.Tensor, path: Path) -> None:
    """A (3, H, W) image in [0, 1] as an 8-bit RGB PNG, rounded to the nearest level."""
    from PIL import Image

    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels, "RGB").save(path)


def thin(scalars: Scalars, keep: set[int], most: int = SCALAR_POINTS) -> Scalars:
    """Each tag's points cut to `most`, evenly spaced by index (the first and last among them), plus the points at
    and around each step in `keep` (the last at or before it, the first at or after it), so that
    events.value_at interpolates any tag at those steps exactly as from the full log."""
    out = {}
    for tag, points in scalars.items():
        if len(points) <= most:
            out[tag] = list(points)
            continue
        steps = [p.step for p in points]
        chosen = {round(i * (len(points) - 1) / (most - 1)) for i in range(most)}
        for k in keep:
            i = bisect.bisect_left(steps, k)
            chosen.update(j for j in (i - 1, i) if 0 <= j < len(points))
        out[tag] = [p for i, p in enumerate(points) if i in chosen]
    return out


def archive_run(run: Path, dest: Path, grid_samples: int = 16, grid_seed: int = 0,
                device: torch.device | str = "cpu") -> Path:
    """Copy finished run `run`'s record (module docstring) into `dest`, replacing what was there; returns `dest`.
    The samples are drawn when the run still has its checkpoint and grid_samples > 0. ValueError when `run` has
    no headline record: only a scored run is archived."""
    import yaml

    run, dest = Path(run), Path(dest)
    if headline_record(run) is None:
        raise ValueError(f"{run}: no headline record in {METRICS_FILE}, so nothing to archive; score it first with "
                         f"`genbench eval run_dir={run}`")
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = dest.with_name(f".{dest.name}.old")
    for stale in [old, *dest.parent.glob(f".{dest.name}.*.tmp")]:  # left by a killed archive
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        for name in COPIED:
            if (run / name).is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, tmp / name)
        (tmp / ".hydra").mkdir(exist_ok=True)
        (tmp / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra_keys(run)))
        scalars = run_scalars(run)
        evaluated = {p.step for tag, points in scalars.items() if tag.startswith("eval") for p in points}
        write_scalars(thin(scalars, evaluated), tmp / SCALARS_FILE)
        if grid_samples and (run / "checkpoints" / "last.pt").is_file():
            (tmp / "eval").mkdir(exist_ok=True)
            save_png(fixed_noise_grid(run, grid_samples, grid_seed, device), tmp / grid_png(grid_samples, grid_seed))
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
