"""Equal-budget comparison on Fashion-MNIST: genbench's default GAN against the pytorch/examples DCGAN recipe.

    .venv/bin/python scripts/bench_gan.py --budget 600     # ~25 min on a 2-core CPU
    .venv/bin/python scripts/bench_gan.py --budget 30 --num-samples 2000   # a 2-minute try of the plumbing

Steps:
1. genbench: `genbench train model=gan` as shipped (with conf/family/gan.yaml: batch 64, no clipping),
   with trainer.max_time = budget and no step limit, sampled from the EMA of G (the default).
2. The recipe of pytorch/examples' dcgan/main.py, written out below: ngf = ndf = 32, nz = 100,
   batch norm in G and in D (except D's first layer), sigmoid + BCE with the non-saturating G loss,
   Adam(2e-4, betas (0.5, 0.999)) for both, batch 64, N(0, 0.02) init, no EMA. Its networks stop
   one stride-2 stage earlier, for 32x32 instead of the recipe's 64x64 (the usual DCGAN for 32x32).
   It is scored twice: with G's batch norm on batch statistics (as the recipe draws its samples)
   and on running statistics (eval mode); the comparison takes the better of the two.
3. Both train on the same Fashion-MNIST training split, padded to 32x32, with the same threads and
   the same training-time budget (batches and optimizer steps count; sampling, checkpoints don't).
4. Both are scored under genbench's evaluation protocol (conf/eval through scripts/benchlib.py: the
   data's extractor, eval.num_samples samples against a fixed eval.num_reference images of the
   training split, FID, IS, KID, precision/recall and memorisation); the JSON (with the protocol
   and its id, the machine and the commit) and a grid of 64 samples per model go to --out.

tests/test_gan.py checks the recipe's plumbing; the comparison itself needs the full budget.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when a test loads this file by path
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as genbench's CLI sets it, before torch loads (both arms)
import torch
import torch.nn.functional as F
from torch import nn

from benchlib import add_common_args, load_data, log, score, setup, train_genbench, write_report
from benchlib import protocol as bench_protocol
from genbench.data import ImageData, to_uint8
from genbench.generate import generate


# ---- the pytorch/examples DCGAN recipe -----------------------------------------------------
class RecipeGenerator(nn.Module):
    """z (N, nz, 1, 1) -> 4x4 x 4ngf -> 8x8 x 2ngf -> 16x16 x ngf -> 32x32 x nc, BN + ReLU, tanh."""

    def __init__(self, nz: int = 100, ngf: int = 32, nc: int = 1):
        super().__init__()

        def up(c_in: int, c_out: int, first: bool = False) -> list[nn.Module]:
            conv = nn.ConvTranspose2d(c_in, c_out, 4, 1 if first else 2, 0 if first else 1, bias=False)
            return [conv, nn.BatchNorm2d(c_out), nn.ReLU(True)]

        self.net = nn.Sequential(*up(nz, 4 * ngf, first=True), *up(4 * ngf, 2 * ngf), *up(2 * ngf, ngf),
                                 nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class RecipeDiscriminator(nn.Module):
    """x (N, nc, 32, 32) -> 16x16 x ndf -> 8x8 x 2ndf (BN) -> 4x4 x 4ndf (BN) -> D(x) in (0, 1), LeakyReLU(0.2)."""

    def __init__(self, ndf: int = 32, nc: int = 1):
        super().__init__()

        def down(c_in: int, c_out: int, bn: bool = True) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), *([nn.BatchNorm2d(c_out)] if bn else []), nn.LeakyReLU(0.2, True)]

        self.net = nn.Sequential(*down(nc, ndf, bn=False), *down(ndf, 2 * ndf), *down(2 * ndf, 4 * ndf),
                                 nn.Conv2d(4 * ndf, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def recipe_init_(m: nn.Module) -> None:
    """The recipe's weights_init: conv weights ~ N(0, 0.02), BN scale ~ N(1, 0.02), BN shift 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def train_recipe(data: ImageData, budget: float, seed: int, batch_size: int = 64, nz: int = 100, width: int = 32,
                 max_steps: int | None = None) -> tuple[nn.Module, dict]:
    """The recipe's loop, run until `budget` seconds of training time (or max_steps): per batch, D on real
    (label 1) and detached fake (label 0), one Adam step; then G on the same fakes labelled real, one Adam step."""
    torch.manual_seed(seed)
    G, D = RecipeGenerator(nz, width, data.image_shape[0]), RecipeDiscriminator(width, data.image_shape[0])
    G.apply(recipe_init_)
    D.apply(recipe_init_)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    step, train_time = 0, 0.0
    while train_time < budget and (max_steps is None or step < max_steps):
        t0 = time.perf_counter()
        x = data.batch(data.batch_indices(step, batch_size, seed))
        ones, zeros = torch.ones(len(x)), torch.zeros(len(x))
        # D: maximise log D(x) + log(1 - D(G(z)))
        D.zero_grad()
        loss_d_real = F.binary_cross_entropy(D(x), ones)
        loss_d_real.backward()
        fake = G(torch.randn(len(x), nz, 1, 1))
        loss_d_fake = F.binary_cross_entropy(D(fake.detach()), zeros)
        loss_d_fake.backward()
        opt_d.step()
        # G: maximise log D(G(z))
        G.zero_grad()
        loss_g = F.binary_cross_entropy(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        step += 1
        train_time += time.perf_counter() - t0
        if step % 500 == 0:
            log.info("recipe step %d (%.0f s): d_loss=%.3f g_loss=%.3f", step, train_time,
                     (loss_d_real + loss_d_fake).item(), loss_g.item())
    return G, {"steps": step, "train_time_s": train_time, "images_seen": step * batch_size, "batch_size": batch_size}


@torch.no_grad()
def recipe_samples(G: nn.Module, n: int, seed: int, batch_norm_mode: str, batch_size: int = 64, nz: int = 100) -> torch.Tensor:
    """n uint8 images from the recipe's G, with batch norm in 'train' (batch statistics) or 'eval' mode."""
    G.train(batch_norm_mode == "train")
    state = {k: v.clone() for k, v in G.state_dict().items()}  # train-mode forwards move the running statistics
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([to_uint8(G(torch.randn(min(batch_size, n - i), nz, 1, 1, generator=generator)))
                        for i in range(0, n, batch_size)])
    G.load_state_dict(state)
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds for each model (default 600)")
    add_common_args(parser, "outputs/bench_gan")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for genbench's run; eval.* ones change the protocol")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    setup(args.threads, args.out)
    protocol = bench_protocol(args.num_samples, args.overrides)  # conf/eval: the reference protocol
    data = load_data(args.overrides)  # the data genbench's run trains on
    num_samples = protocol.num_samples

    # 1. genbench's GAN (EMA of G), trained by genbench's own Trainer
    with tempfile.TemporaryDirectory() as tmp:
        model, genbench_run = train_genbench(Path(tmp) / "gan", args.budget, args.seed, ["model=gan", *args.overrides])
    samples = {"genbench": generate(model, num_samples, protocol.batch_size, args.seed + 1)[0]}
    # 2. the recipe, scored with batch-statistics and running-statistics batch norm
    G, recipe_run = train_recipe(data, args.budget, args.seed)
    for mode in ("train", "eval"):
        samples[f"recipe_bn_{mode}"] = recipe_samples(G, num_samples, args.seed + 1, mode)
    # 3. one scoring path for all: genbench's evaluation protocol
    results = {}
    for name, images in samples.items():
        results[name] = score(images, data, protocol, name, args.out)
        log.info("%s: fid=%.4g", name, results[name]["fid"])
    recipe_fid = min(results["recipe_bn_train"]["fid"], results["recipe_bn_eval"]["fid"])
    write_report({
        "budget_s": args.budget, "num_samples": num_samples, "seed": args.seed, "threads": args.threads,
        "genbench": {**genbench_run, "command": " ".join(["genbench train model=gan", *args.overrides]), **results["genbench"]},
        "recipe": {**recipe_run, "bn_batch_stats": results["recipe_bn_train"], "bn_running_stats": results["recipe_bn_eval"],
                   "fid": recipe_fid},
        "genbench_fid_lower": results["genbench"]["fid"] < recipe_fid,
    }, args.out / "bench_gan.json")


if __name__ == "__main__":
    main()
