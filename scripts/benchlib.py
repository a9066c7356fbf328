"""What every benchmark in scripts/ shares: the flags, genbench's own training run, and the one scoring
path, genbench's evaluation protocol (genbench.protocol.Protocol from conf/eval). Not part of the package.

Every script scores every side with `score(images, data, protocol)`: the same extractor, reference
images, metric settings and memorisation rule as `genbench eval`, and every report carries the
protocol it used (`protocol`, with its `id`), the machine (genbench.runtime.machine_record) and the
git commit. Numbers from two reports are comparable only when their protocol ids are equal.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torchvision.utils import save_image

from genbench import CONF_DIR
from genbench.atomic import atomic_write
from genbench.data import ImageData, image_grid
from genbench.protocol import Protocol

log = logging.getLogger("bench")


def add_common_args(parser: argparse.ArgumentParser, out: str, num_samples: int | None = None) -> None:
    """--num-samples, --seed, --threads, --out: the flags every benchmark takes."""
    parser.add_argument("--num-samples", type=int, default=num_samples,
                        help=f"samples scored per model (default: {num_samples or 'eval.num_samples of conf/eval, 10000'})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for every model")
    parser.add_argument("--out", type=Path, default=Path(out), help=f"folder for the report and grids (default {out})")


def setup(threads: int, out: Path) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", stream=sys.stdout)
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)


def compose_config(verb: str, overrides: list[str]):
    """conf/<verb>.yaml with `overrides`, as the CLI would compose it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(verb, overrides=list(overrides))


def is_eval_override(override: str) -> bool:
    return override.lstrip("~+").startswith(("eval.", "eval="))


def protocol(num_samples: int | None = None, overrides: list[str] = ()) -> Protocol:
    """The evaluation protocol of conf/eval (the reference one unless the eval.* among `overrides` change it),
    with eval.num_samples = num_samples when given."""
    extra = [f"eval.num_samples={num_samples}"] if num_samples else []
    return instantiate(compose_config("eval", [*extra, *filter(is_eval_override, overrides)]).eval, _convert_="all")


def load_data(overrides: list[str] = ()) -> ImageData:
    """The data `genbench train` would train on with these overrides (default: Fashion-MNIST, 32x32)."""
    return instantiate(compose_config("train", [o for o in overrides if o.startswith(("data=", "data."))]).data, _convert_="all")


def train_genbench(run_dir: Path, budget: float | None, seed: int, overrides: list[str]) -> tuple[torch.nn.Module, dict]:
    """`genbench train` as configured (no step limit by default) with trainer.max_time = budget seconds (None: as
    the overrides say); returns the EMA model and what the run did. No eval during or after training: the
    benchmark scores every side alike, with `score`."""
    from genbench.train import train

    budget_override = [] if budget is None else [f"trainer.max_time={budget}"]
    overrides = [o for o in overrides if not is_eval_override(o)]  # the protocol's: `protocol(...)`
    cfg = compose_config("train", [f"seed={seed}", *budget_override, "trainer.device=cpu", "trainer.progress=false",
                                   "~eval", *overrides])
    train(cfg, str(run_dir))
    return trained_run(run_dir, overrides)


def trained_run(run_dir: Path, overrides: list[str]) -> tuple[torch.nn.Module, dict]:
    """A finished `genbench train` folder's EMA model and what the run did (`overrides`: how it was configured)."""
    from genbench.checkpoint import load_model

    model, state = load_model(run_dir, ema=True)
    return model, {"steps": state["step"], "train_time_s": state["train_time"], "images_seen": state["images_seen"],
                   "batch_size": state["config"]["trainer"]["batch_size"], "overrides": overrides,
                   "compute": state.get("compute"), "parameters": sum(p.numel() for p in model.parameters())}


def score(images: torch.Tensor, data: ImageData, protocol: Protocol, name: str | None = None, out: Path | None = None) -> dict:
    """The protocol's metrics and memorisation of uint8 samples, flat, with the protocol's id; with `name`
    and `out`, a 64-sample grid (out/name.png) and the memorisation panel (out/name_memorisation.png)."""
    features = protocol.features(images, data)  # extracted once for both
    scored = protocol.score(images, data, features=features)
    memorisation, panel = protocol.memorise(images, data, features=features)
    if name and out:
        save_grid(images, out / f"{name}.png")
        if panel is not None:
            save_image(panel, out / f"{name}_memorisation.png")
    return {**scored["metrics"], "memorisation": memorisation, "num_generated": len(images), "protocol": scored["protocol"]}


def save_grid(images: torch.Tensor, path: Path, n: int = 64) -> None:
    save_image(image_grid(images[:n]), path)


def write_report(report: dict, path: Path) -> None:
    """The report, written atomically, with the machine, the commit and the protocols its rows were scored
    under: each row's `protocol` (from `score`) becomes that protocol's id, and `protocols` maps each id to
    its settings."""
    from genbench.runtime import git_commit, machine_record

    report, protocols = json.loads(json.dumps(report)), {}  # a copy: the caller's rows keep their protocol dicts
    for row in _walk(report):
        if isinstance(row.get("protocol"), dict) and "id" in row["protocol"]:
            protocols[row["protocol"]["id"]] = row["protocol"]
            row["protocol"] = row["protocol"]["id"]
    report = {**report, "protocols": protocols, "machine": machine_record(torch.device("cpu")), "git": git_commit()}
    atomic_write(path, lambda f: f.write((json.dumps(report, indent=2) + "\n").encode()))
    print(json.dumps(report, indent=2))


def _walk(obj):
    """Every dict inside `obj`, `obj` included."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)
