"""Equal-budget comparison on Fashion-MNIST: genbench's default VAE against the pytorch/examples VAE recipe.

    python scripts/bench_vae.py --budget 600     # ~25 min on a 2-core CPU

Steps:
1. genbench: `genbench train model=vae` as shipped, with trainer.max_time = budget and no step limit,
   sampled from the EMA weights as the decoder mean of p(x|z), z ~ N(0, I) (the default).
2. The recipe of pytorch/examples' vae/main.py, written out below: an MLP 784-400-20 encoder and
   20-400-784 decoder with ReLU, a Bernoulli decoder (sigmoid + binary cross-entropy summed over
   pixels, on the grey levels in [0, 1] as the recipe does), the analytic KL, Adam(1e-3), batch 128,
   on the 28x28 images. Its samples are the decoder mean sigmoid(f(z)), z ~ N(0, I), padded to 32x32
   with black like genbench's data.
3. Both train on the same Fashion-MNIST training split with the same threads and the same
   training-time budget (batches, optimizer steps and, for genbench, its EMA update count; sampling
   and checkpoints don't).
4. Both are scored under genbench's evaluation protocol (conf/eval through scripts/benchlib.py: the
   reference protocol's 10,000 training images, KID subsets of 1,000, the data's extractor, and
   memorisation), with the same number of samples; the JSON records the protocol and its id. genbench's VAE also reports its
   test-split likelihood in bits/dim (ELBO and IWAE bound: the discrete 8-bit likelihood that
   `genbench eval` reports) and its active units. The recipe has none: a Bernoulli density on grey
   levels is not a distribution over 8-bit images. The JSON and a sample grid per model go to --out.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchlib import add_common_args, load_data, log, score, setup, train_genbench, write_report
from benchlib import protocol as bench_protocol
from genbench.data import ImageData, fashion_mnist, fit_size
from genbench.generate import generate, likelihoods

RECIPE_SIDE = 28  # the recipe's images are the raw 28x28 ones


# ---- the pytorch/examples VAE recipe -----------------------------------------------------------
class RecipeVAE(nn.Module):
    """q(z|x): 784 -> 400 (ReLU) -> mu, log_var (20 each); p(x|z): 20 -> 400 (ReLU) -> 784 Bernoulli means."""

    def __init__(self, pixels: int = RECIPE_SIDE**2, hidden: int = 400, latent: int = 20):
        super().__init__()
        self.enc, self.mu, self.log_var = nn.Linear(pixels, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec, self.out = nn.Linear(latent, hidden), nn.Linear(hidden, pixels)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(F.relu(self.dec(z))))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.enc(x))
        mu, log_var = self.mu(h), self.log_var(h)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        return self.decode(z), mu, log_var


def train_recipe(data: ImageData, budget: float, seed: int, batch_size: int = 128) -> tuple[RecipeVAE, dict]:
    """The recipe's loop until `budget` seconds of training time: loss = BCE(sum) + KL(sum) per batch,
    one Adam(1e-3) step per batch. `data` holds the 28x28 images."""
    torch.manual_seed(seed)
    model = RecipeVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    step, train_time = 0, 0.0
    while train_time < budget:
        t0 = time.perf_counter()
        x = data.train[data.batch_indices(step, batch_size, seed)].flatten(1).float() / 255  # (N, 784) in [0, 1]
        recon, mu, log_var = model(x)
        bce = F.binary_cross_entropy(recon, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + log_var - mu.square() - log_var.exp())
        opt.zero_grad()
        (bce + kl).backward()
        opt.step()
        step += 1
        train_time += time.perf_counter() - t0
        if step % 1000 == 0:
            log.info("recipe step %d (%.0f s): loss per image %.1f", step, train_time, (bce + kl).item() / len(x))
    return model, {"steps": step, "train_time_s": train_time, "images_seen": step * batch_size, "batch_size": batch_size}


@torch.no_grad()
def recipe_samples(model: RecipeVAE, n: int, seed: int, image_size: int, batch_size: int = 256) -> torch.Tensor:
    """n uint8 decoder means at z ~ N(0, I), (n, 1, image_size, image_size): padded with black as the data is."""
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for i in range(0, n, batch_size):
        p = model.decode(torch.randn(min(batch_size, n - i), 20, generator=generator))
        chunks.append((p * 255).round().to(torch.uint8).view(-1, 1, RECIPE_SIDE, RECIPE_SIDE))
    return fit_size(torch.cat(chunks), image_size, "pad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds for each model (default 600)")
    parser.add_argument("--likelihood-images", type=int, default=10_000,
                        help="test images scored in bits/dim for genbench's VAE (default 10000, the whole split)")
    add_common_args(parser, "outputs/bench_vae")
    parser.add_argument("--run-dir", type=Path, default=None, help="genbench's run folder (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for genbench's run; eval.* ones change the protocol")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    setup(args.threads, args.out)
    protocol = bench_protocol(args.num_samples, args.overrides)  # conf/eval: the reference protocol
    data = load_data(args.overrides)

    # 1. genbench's default VAE: EMA weights, decoder means at z ~ N(0, I); its test-split likelihood
    with tempfile.TemporaryDirectory() as tmp:
        model, genbench_run = train_genbench(args.run_dir or Path(tmp) / "vae", args.budget, args.seed,
                                             ["model=vae", *args.overrides])
    samples = {"genbench": generate(model, protocol.num_samples, protocol.batch_size, args.seed + 1)[0]}
    start = time.perf_counter()
    test = data.split("test")[: args.likelihood_images]
    genbench_run.update(**model.sampling_info(), bits_per_dim=likelihoods(model, test, 250, args.seed),
                        likelihood_images=len(test), likelihood_s=time.perf_counter() - start, **model.latent_statistics(test))
    # 2. the recipe on the 28x28 images, sampled as decoder means at z ~ N(0, I)
    recipe, recipe_run = train_recipe(fashion_mnist(image_size=RECIPE_SIDE), args.budget, args.seed)
    samples["recipe"] = recipe_samples(recipe, protocol.num_samples, args.seed + 1, data.image_shape[-1])
    # 3. one scoring path for both: genbench's evaluation protocol
    results = {}
    for name, images in samples.items():
        results[name] = score(images, data, protocol, name, args.out)
        log.info("%s: fid=%.4g", name, results[name]["fid"])
    write_report({
        "budget_s": args.budget, "num_samples": protocol.num_samples, "seed": args.seed, "threads": args.threads,
        "genbench": {**genbench_run, **results["genbench"]},
        "recipe": {**recipe_run, **results["recipe"], "decoder_output": "mean", "bits_per_dim": None,
                   "bits_per_dim_note": "a Bernoulli density on grey levels is not a distribution over 8-bit images"},
        "genbench_fid_lower": results["genbench"]["fid"] < results["recipe"]["fid"],
    }, args.out / "bench_vae.json")


if __name__ == "__main__":
    main()
