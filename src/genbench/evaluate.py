"""`genbench eval`: score samples under genbench's evaluation protocol (genbench.protocol) and record it.

    genbench eval run_dir=RUN [sampler=ddim sampler.steps=50] [eval.ema=false] [samples_dir=RUN/samples/X]
    genbench eval samples_dir=FOLDER_OR_NPZ data=fashion_mnist [out=DIR]     # samples made anywhere

1. Build the protocol from conf/eval (it checks its own settings) and pick the device.
2. With run_dir: rebuild the run's model and data, sample (or read samples_dir), score, and add the
   record to RUN/metrics.json and RUN/tb (genbench.records, genbench.tblog).
3. Without: load data= and score samples_dir as an external record (source "external").
4. Print the record's one-line summary.
"""

from __future__ import annotations


import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genbench import CONF_DIR
from genbench.protocol import Protocol, external_out, summary_line
from genbench.records import metrics_path
from genbench.runtime import resolve_device
from genbench.validate import one_line_errors


def eval_dir(run_dir: str | None, samples_dir: str | None, out: str | None) -> str:
    """Where the record (and Hydra's log) goes: the run, else out=, else a folder beside the samples
    (genbench.protocol.external_out: <folder>_eval/ or <file stem>_eval/)."""
    if run_dir:
        return run_dir
    if out:
        return out
    if samples_dir:
        return str(external_out(samples_dir))
    return "."  # nothing to evaluate: main() says so


OmegaConf.register_new_resolver("eval_dir", eval_dir, replace=True)


@hydra.main(config_path=CONF_DIR, config_name="eval", version_base="1.3")
@one_line_errors
def main(cfg: DictConfig) -> None:
    # 1. protocol and device
    protocol: Protocol = instantiate(cfg.eval, _convert_="all")
    device = resolve_device(cfg.device)
    if cfg.run_dir:
        # 2. a run
        if cfg.get("out"):
            raise ValueError("out= is for samples without a run; a run's records go to RUN/metrics.json, drop out=")
        data = instantiate(cfg.data, _convert_="all") if cfg.get("data") else None  # data= replaces the run's (e.g. a moved root)
        sampler = OmegaConf.to_container(cfg.sampler, resolve=True) if cfg.get("sampler") else None
        record = protocol.evaluate_run(cfg.run_dir, device, data=data, sampler=sampler, samples_dir=cfg.samples_dir)
        where = metrics_path(cfg.run_dir)
    elif cfg.samples_dir:
        # 3. samples from anywhere
        if not cfg.get("data"):
            raise ValueError("samples_dir= without run_dir= needs data=fashion_mnist|mnist|cifar10|image_folder: the images "
                             "to score the samples against")
        data = instantiate(cfg.data, _convert_="all")
        record = protocol.evaluate_samples(cfg.samples_dir, data, device, out=cfg.out)
        where = metrics_path(eval_dir(None, cfg.samples_dir, cfg.out))
    else:
        raise ValueError("run_dir= or samples_dir= is required: run_dir=RUN (a `genbench train` folder), or "
                         "samples_dir=FOLDER data=fashion_mnist for samples made anywhere")
    # 4. summary
    print(f"wrote {where} [{record['key']}]: {summary_line(record)}")
