"""`genbench train`: build data, model, optimizer and Trainer from the config, then fit."""

from __future__ import annotations

import logging
import secrets
import signal
import sys

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genbench import CONF_DIR, distributed
from genbench.protocol import summary_line
from genbench.runtime import seed_everything
from genbench.trainer import Trainer
from genbench.validate import one_line_errors

# ${uid:} in conf/hydra/default.yaml: six hex digits drawn once per process, so two runs started
# in the same second get different folders.
_UID = secrets.token_hex(3)
OmegaConf.register_new_resolver("uid", lambda: _UID, replace=True)
log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: str) -> Trainer:
    """Build everything from `cfg` and fit; returns the Trainer (its `stop_signal` says if a signal stopped it)."""
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed={cfg.seed!r} must be an integer, e.g. seed=0")
    if cfg.get("threads"):  # parallel sweep jobs share the cores: each one is capped
        torch.set_num_threads(cfg.threads)
    ctx = distributed.from_env()  # torchrun, or a submitit job of several tasks (done by cli.py for torchrun)
    distributed.init(ctx)
    if not ctx.is_main:
        separate_log_file(run_dir, ctx.rank)
    log.info("%d CPU threads", torch.get_num_threads())
    seed_everything(cfg.seed)
    # the trainer first: a GPU preset on a machine without one is refused before any data is read
    trainer = instantiate(cfg.trainer, run_dir=run_dir, seed=cfg.seed, _convert_="all")
    protocol = instantiate(cfg.eval, _convert_="all") if "eval" in cfg else None  # checks its settings now
    data = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, image_shape=data.image_shape, _convert_="all")
    optimizer = instantiate(cfg.optim, _convert_="all")
    # evaluation (every trainer.eval_every steps, and at the end): checked against the data before training,
    # so a missing extractor or reference split fails now rather than after the run
    evaluates = protocol is not None and ctx.is_main  # under torchrun, rank 0 evaluates alone
    if evaluates and protocol.at_end:
        protocol.prepare(data, trainer.device)
    eval_fn = protocol.during_training(data, trainer.device) if evaluates and cfg.trainer.get("eval_every") else None
    trainer.fit(model, data, optimizer, config=OmegaConf.to_container(cfg, resolve=True), eval_fn=eval_fn)
    if evaluates and protocol.at_end and not trainer.interrupted:  # not when pre-empted
        record = protocol.evaluate_run(run_dir, trainer.device, data=data, headline=True)  # the run's headline record
        log.info("final evaluation: %s", summary_line(record))
    return trainer


def separate_log_file(run_dir: str, rank: int) -> None:
    """Ranks other than 0 log to train_rank<r>.log, not into rank 0's train.log."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if not handler.baseFilename.endswith(f"_rank{rank}.log"):
            root.removeHandler(handler)
            replacement = logging.FileHandler(f"{run_dir}/train_rank{rank}.log")
            replacement.setFormatter(handler.formatter)
            root.addHandler(replacement)


def resume_command(run_dir: str) -> str:
    """The command that resumes this run: the same overrides, in the same folder."""
    overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("hydra.run.dir=")]
    return " ".join(["genbench train", *overrides, f"hydra.run.dir={run_dir}"])


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    run_dir = HydraConfig.get().runtime.output_dir
    trainer = train(cfg, run_dir)  # one_line_errors writes what stops it into train.log
    if trainer.interrupted:  # pre-empted or Ctrl-C: the checkpoint is on disk; 128 + N is the shell's "stopped by signal N"
        name = signal.Signals(trainer.stop_signal).name
        log.warning("pre-empted by %s at step %d; resume with: %s", name, trainer.step, resume_command(run_dir))
        sys.exit(128 + trainer.stop_signal)
