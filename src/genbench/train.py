"""`genbench train`: build data, model, optimizer and Trainer from the config, then fit."""

from __future__ import annotations

import logging
import secrets

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genbench import CONF_DIR
from genbench.evaluate import evaluate_run, make_eval_fn, summary_line
from genbench.trainer import seed_everything
from genbench.validate import one_line_errors

# ${uid:} in conf/hydra/default.yaml: six hex digits drawn once per process, so two runs started
# in the same second get different folders.
_UID = secrets.token_hex(3)
OmegaConf.register_new_resolver("uid", lambda: _UID, replace=True)
log = logging.getLogger(__name__)


def train(cfg: DictConfig, run_dir: str) -> None:
    if cfg.get("threads"):  # parallel sweep jobs share the cores: each one is capped
        torch.set_num_threads(cfg.threads)
    log.info("%d CPU threads", torch.get_num_threads())
    seed_everything(cfg.seed)
    data = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, image_shape=data.image_shape, _convert_="all")
    optimizer = instantiate(cfg.optim, _convert_="all")
    trainer = instantiate(cfg.trainer, run_dir=run_dir, seed=cfg.seed, _convert_="all")
    # evaluation (every trainer.eval_every steps, and at the end): set up before training, so that a
    # missing feature extractor fails now rather than after the run
    evaluating = "eval" in cfg and bool(cfg.trainer.get("eval_every") or cfg.eval.at_end)
    eval_fn = make_eval_fn(cfg.eval, data, cfg.data._target_, trainer.device) if evaluating else None
    trainer.fit(model, data, optimizer, config=OmegaConf.to_container(cfg, resolve=True), eval_fn=eval_fn)
    if evaluating and cfg.eval.at_end and not trainer.interrupted:  # not when pre-empted
        log.info("final evaluation: %s", summary_line(evaluate_run(run_dir, cfg.eval, trainer.device)))


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    train(cfg, HydraConfig.get().runtime.output_dir)
