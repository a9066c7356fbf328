"""One model trained by several processes: torchrun and DistributedDataParallel (DDP).

    torchrun --nproc_per_node=N -m genbench train [overrides]                  # one machine, N processes
    torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:PORT -m genbench train [overrides]           # M machines (torchrun's own flags)

What it means:
- `trainer.batch_size` is the GLOBAL batch. Each of the N processes takes a contiguous 1/N of every
  batch, so the data order, `images_seen`, the learning rate and the budgets are those of a single
  process with the same batch size. DDP averages the gradients, and each process's loss is a mean over
  its shard, so a step equals the single-process step up to float reduction order (and, for families
  with batch norm, per-process batch statistics: SyncBatchNorm exists only on GPUs).
- Backend: NCCL for CUDA tensors, gloo for CPU ones (one process group, "cpu:gloo,cuda:nccl").
- Every process draws its own noise (seed + a per-rank offset; rank 0 draws what a single process draws).
- Rank 0 alone writes TensorBoard, sample grids, checkpoints and the evaluation (which runs on rank 0
  alone, after training). Checkpoints hold every rank's RNG state: a resume on the same number of
  processes is exact; on another number it keeps the data order and starts new noise streams (it says so).
- The processes agree once per step on whether to stop (a budget, a signal to any of them), so they all
  checkpoint at the same step.
"""

from __future__ import annotations

import datetime
import os
import secrets
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

RANK_SEED_OFFSET = 1_000_003  # rank r seeds its streams with seed + r * this (a prime, far from small seeds)


@dataclass(frozen=True)
class Context:
    """Where this process sits: rank among world_size processes, local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Context:
    """The Context torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or a submitit job of several tasks
    (hydra/launcher=slurm with tasks_per_node > 1 or nodes > 1, or submitit_local), whose ranks submitit's
    TorchDistributedEnvironment exports in torchrun's variables; a single process otherwise."""
    env = os.environ
    if "WORLD_SIZE" not in env and env.get("SUBMITIT_EXECUTOR"):
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment

        if JobEnvironment().num_tasks > 1:
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if "WORLD_SIZE" in env:
        return Context(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    return Context()


def init(ctx: Context) -> None:
    """Join the process group (env:// rendezvous, as torchrun sets it up) and pick this rank's GPU."""
    if not ctx.enabled or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """Rank r's device: its own GPU (cuda:local_rank) when training on CUDA."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard(indices: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Rank r's contiguous 1/world_size of a global batch of indices."""
    if not ctx.enabled:
        return indices
    if len(indices) % ctx.world_size:
        raise ValueError(f"trainer.batch_size={len(indices)} is the global batch and must divide among the "
                         f"{ctx.world_size} processes; use a multiple of {ctx.world_size}")
    per = len(indices) // ctx.world_size
    return indices[ctx.rank * per : (ctx.rank + 1) * per]


def wrap(model: nn.Module, ctx: Context) -> list[str]:
    """Replace each trainable child module of a family (a UNet, a GAN's G and D, a VAE's encoder and
    decoder) by DDP around it, so its gradients are averaged over processes; returns their names."""
    if not ctx.enabled:
        return []
    names = []
    for name, child in list(model.named_children()):
        if any(p.requires_grad for p in child.parameters()):
            setattr(model, name, DistributedDataParallel(child))
            names.append(name)
    return names


def unwrap(model: nn.Module, names: list[str]) -> None:
    for name in names:
        setattr(model, name, getattr(model, name).module)


def plain_state_dict(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """model.state_dict() with the keys a single-process run has (no `.module.` from the DDP wrappers)."""
    state = model.state_dict()
    for name in names:
        state = {(f"{name}." + k[len(name) + 8 :] if k.startswith(f"{name}.module.") else k): v for k, v in state.items()}
    return state


def agree_stop(local: tuple[bool, int], ctx: Context, device: torch.device) -> tuple[bool, int]:
    """(budget spent, stop signal number or 0), agreed by every process: any one's budget or signal stops all."""
    if not ctx.enabled:
        return local
    flags = torch.tensor([int(local[0]), local[1]], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), int(flags[1])


def all_gather(obj, ctx: Context) -> list:
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def shared_run_dir(ctx: Context, argv: list[str]) -> list[str]:
    """Under torchrun every process composes its own Hydra config, so they must agree on one run folder:
    rank 0 names it (outputs/<date>/<time>-<model>-<uid>, the single-process pattern) and tells the
    others, who log to train_rank<r>.log and leave .hydra/ to rank 0. An explicit hydra.run.dir wins."""
    if not ctx.enabled:
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        raise ValueError("a sweep (-m) cannot run under torchrun: launch one torchrun per run, or sweep with "
                         "hydra/launcher=slurm and hydra.launcher.tasks_per_node=N")
    now = datetime.datetime.now()
    chosen = [f"outputs/{now:%Y-%m-%d}/{now:%H-%M-%S}-${{hydra.runtime.choices.model}}-{secrets.token_hex(3)}"]
    dist.broadcast_object_list(chosen, src=0)
    extra = [] if any(a.startswith("hydra.run.dir=") for a in argv) else [f"hydra.run.dir={chosen[0]}"]
    if not ctx.is_main:
        extra += ["hydra.output_subdir=null", f"hydra.job.name=train_rank{ctx.rank}"]
    return [*argv, *extra]
