"""Equal-budget comparison on Fashion-MNIST: genbench's default diffusion model against two recipes
built from diffusers (`pip install -e ".[bench]"`: diffusers, an optional benchmark dependency).

    python scripts/bench_diffusion.py --budget 600 --num-samples 2000   # ~45 min on a 2-core CPU

Steps:
1. genbench: `genbench train model=diffusion` as shipped, with trainer.max_time = budget and no
   step limit; EMA weights; scored with its default sampler and, for a like-for-like row, DDIM-50.
2. Two recipes from diffusers' train_unconditional example, shrunk to 32x32 grey, written here:
   - as-is: UNet2DModel, block_out_channels (32, 64, 64), two layers per block, attention at the
     middle level; DDPMScheduler (linear, T = 1000); AdamW at 1e-3 (the example's betas (0.95, 0.999),
     weight decay 1e-6, 500 warm-up steps, then constant, since a time budget has no known end);
     batch 64; diffusers' EMAModel with its warm-up (decay 0.9999, inv_gamma 1, power 3/4);
   - scaled down: the same with channels (16, 32, 64), no attention, 8 groups in GroupNorm (32
     cannot divide 16 channels), lr 2e-3, batch 128.
   Both are sampled with DDIMScheduler, 50 steps, eta 0.
3. Every model trains on the same training split, padded to 32x32, with the same threads and the
   same training-time budget (optimizer steps count; sampling and scoring don't).
4. All are scored under genbench's evaluation protocol (conf/eval through scripts/benchlib.py: the
   reference protocol's 10,000 training images, KID subsets of 1,000, the data's extractor, and
   memorisation) with the same number of samples; the JSON (with the protocol and its id) and a
   64-image grid per model go to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchlib import add_common_args, load_data, log, score, setup, train_genbench, write_report
from benchlib import protocol as bench_protocol
from genbench.data import ImageData, to_uint8
from genbench.generate import generate

RECIPES = {
    "diffusers_as_is": dict(channels=(32, 64, 64), attention=True, groups=32, lr=1e-3, batch_size=64),
    "diffusers_scaled_down": dict(channels=(16, 32, 64), attention=False, groups=8, lr=2e-3, batch_size=128),
}


def build_unet(channels: tuple[int, ...], attention: bool, groups: int):
    from diffusers import UNet2DModel

    middle = len(channels) // 2
    down = tuple("AttnDownBlock2D" if attention and i == middle else "DownBlock2D" for i in range(len(channels)))
    up = tuple("AttnUpBlock2D" if attention and i == len(channels) - 1 - middle else "UpBlock2D" for i in range(len(channels)))
    return UNet2DModel(sample_size=32, in_channels=1, out_channels=1, layers_per_block=2, block_out_channels=channels,
                       down_block_types=down, up_block_types=up, norm_num_groups=groups)


def train_recipe(data: ImageData, budget: float, seed: int, channels, attention, groups, lr, batch_size):
    """The example's loop: eps ~ N(0, I), t ~ U{0..999}, MSE between the UNet's output and eps."""
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    unet = build_unet(channels, attention, groups)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, betas=(0.95, 0.999), weight_decay=1e-6)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 500))
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    step, train_time = 0, 0.0
    while train_time < budget:
        t0 = time.perf_counter()
        x_0 = data.batch(data.batch_indices(step, batch_size, seed))
        eps = torch.randn_like(x_0)
        t = torch.randint(0, 1000, (len(x_0),))
        loss = F.mse_loss(unet(scheduler.add_noise(x_0, eps, t), t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        warmup.step()
        ema.step(unet.parameters())
        step += 1
        train_time += time.perf_counter() - t0
        if step % 200 == 0:
            log.info("recipe step %d (%.0f s): loss=%.4f", step, train_time, loss.item())
    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    return ema_unet.eval(), {"steps": step, "train_time_s": train_time, "images_seen": step * batch_size,
                             "batch_size": batch_size, "parameters": sum(p.numel() for p in unet.parameters())}


@torch.no_grad()
def ddim_samples(unet, n: int, seed: int, steps: int = 50, batch_size: int = 250) -> tuple[torch.Tensor, float]:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler.set_timesteps(steps)
    generator, chunks, start = torch.Generator().manual_seed(seed), [], time.perf_counter()
    for i in range(0, n, batch_size):
        x = torch.randn(min(batch_size, n - i), 1, 32, 32, generator=generator)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
        chunks.append(to_uint8(x))
    return torch.cat(chunks), n / (time.perf_counter() - start)


def previous_results(path: Path, args: argparse.Namespace, protocol_id: str) -> dict:
    """The rows of an earlier report in --out, for --only; refused unless it ran with the same budget and seed
    and every row under the same evaluation protocol (id)."""
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    setting = {"budget_s": args.budget, "seed": args.seed}
    ids = {r.get("protocol") for r in report["results"].values()}
    if any(report.get(k) != v for k, v in setting.items()) or ids != {protocol_id}:
        raise SystemExit(f"{path} was made with {({k: report.get(k) for k in setting})} under protocol(s) {sorted(map(str, ids))}, "
                         f"not {setting} under {protocol_id}: use another --out, or rerun every model without --only")
    for row in report["results"].values():  # back to the full description, as `score` gives it
        row["protocol"] = report["protocols"][row["protocol"]]
    return report["results"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds for each model (default 600)")
    add_common_args(parser, "outputs/bench_diffusion")
    parser.add_argument("--only", nargs="*", default=None,
                        help="rerun a subset of: genbench " + " ".join(RECIPES) + "; the other rows of --out's report "
                             "stay (budget, sample count and seed must match)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for genbench's run; eval.* ones change the protocol")
    args = parser.parse_intermixed_args()  # overrides may come before or after the options
    setup(args.threads, args.out)
    protocol = bench_protocol(args.num_samples, args.overrides)  # conf/eval: the reference protocol
    data = load_data(args.overrides)
    n, batch = protocol.num_samples, protocol.batch_size
    pid = protocol.describe(data, protocol.prepare(data)[0].extractor.name, n, len(protocol.reference(data)))["id"]
    results = previous_results(args.out / "bench_diffusion.json", args, pid) if args.only is not None else {}
    if args.only is None or "genbench" in args.only:
        # 1. genbench's default diffusion model, with its own sampler and with DDIM-50
        # the run stays in --out/genbench_run: scripts/fid_vs_steps.py takes it from there
        model, run = train_genbench(args.out / "genbench_run", args.budget, args.seed, ["model=diffusion", *args.overrides])
        for label, sampler in (("default_sampler", None), ("ddim50", "ddim")):
            if sampler:
                from genbench.samplers import DDIM

                model.sampler = DDIM(steps=50, eta=0.0, spacing="leading")
            images, img_per_s = generate(model, n, batch, args.seed + 1)
            results[f"genbench_{label}"] = {**run, **model.sampling_info(), "img_per_s": img_per_s,
                                            **score(images, data, protocol, f"genbench_{label}", args.out)}
            log.info("genbench %s: %s", label, results[f"genbench_{label}"])
    # 2. the diffusers recipes, DDIM-50
    for name, recipe in RECIPES.items():
        if args.only is not None and name not in args.only:
            continue
        unet, run = train_recipe(data, args.budget, args.seed, **recipe)
        images, img_per_s = ddim_samples(unet, n, args.seed + 1, batch_size=batch)
        results[name] = {**run, **recipe, "sampler": "DDIM", "nfe": 50, "img_per_s": img_per_s,
                         **score(images, data, protocol, name, args.out)}
        log.info("%s: %s", name, results[name])
    report = {"budget_s": args.budget, "num_samples": n, "seed": args.seed, "results": results}
    recipes = [r["fid"] for k, r in results.items() if k in RECIPES]
    if recipes and "genbench_default_sampler" in results:
        report["best_recipe_fid"] = min(recipes)
        report["genbench_fid_over_best_recipe"] = results["genbench_default_sampler"]["fid"] / min(recipes)
    write_report(report, args.out / "bench_diffusion.json")


if __name__ == "__main__":
    main()
