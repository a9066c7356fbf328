"""Compose and instantiate every option of every config group, as `genbench train` would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from genbench import CONF_DIR
from genbench.data import DatasetNotFound
from genbench.models.base import GenerativeModel
from genbench.trainer import Trainer
from tests.conftest import write_mnist_like


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("model", options("model"))
def test_every_model_builds_and_yields_losses(compose_cfg, model):
    cfg = compose_cfg("train", [f"model={model}"])
    net = instantiate(cfg.model, image_shape=(1, 32, 32), _convert_="all")
    assert isinstance(net, GenerativeModel)
    optimizers = net.optimizers(instantiate(cfg.optim, _convert_="all"))
    terms = list(net.training_losses(torch.rand(4, 1, 32, 32) * 2 - 1))
    assert terms and all(t.optimizer in optimizers and torch.isfinite(t.loss) for t in terms)


@pytest.mark.parametrize("schedule", options("schedule"))
@pytest.mark.parametrize("sampler", options("sampler"))
def test_every_schedule_and_sampler_plug_into_diffusion(compose_cfg, schedule, sampler):
    cfg = compose_cfg("train", ["experiment=tiny", f"schedule@model.schedule={schedule}", f"sampler@model.sampler={sampler}",
                                "model.sampler.steps=3"])
    model = instantiate(cfg.model, image_shape=(1, 8, 8), _convert_="all")
    assert type(model.schedule.betas) is torch.Tensor and model.schedule.betas.dtype == torch.float64
    assert model.sampling_info()["nfe"] == 3 and model.sample(2).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("data", options("data"))
def test_every_dataset_loads_or_says_how_to_get_it(compose_cfg, data, tmp_path: Path):
    root = write_mnist_like(tmp_path, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}.get(data, "MNIST"))
    if data == "image_folder":
        from PIL import Image

        for i in range(3):
            Image.new("RGB", (40, 40), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    cfg = compose_cfg("train", [f"data={data}", f"data.root={root}"])
    try:
        ds = instantiate(cfg.data, _convert_="all")
    except InstantiationException as e:  # CIFAR-10 is not on disk here; the error must name the fix
        assert data == "cifar10" and isinstance(e.__cause__, DatasetNotFound) and "data.download=true" in str(e)
        return
    assert ds.train.dtype == torch.uint8 and ds.image_shape[1:] == (32, 32)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_preset_instantiates(compose_cfg, trainer, tmp_path: Path):
    cfg = compose_cfg("train", [f"trainer={trainer}", "trainer.device=cpu"])
    t = instantiate(cfg.trainer, run_dir=str(tmp_path), seed=0, _convert_="all")
    assert isinstance(t, Trainer) and ((t.max_steps or 0) > 0 or (t.max_time or 0) > 0)  # something ends training


@pytest.mark.parametrize("model", options("model"))
def test_every_default_run_is_bounded_by_the_time_budget(compose_cfg, model):
    """`genbench train model=X` trains for trainer.max_time (10 min) whatever the family's step speed; a
    family's own trainer settings (conf/family/default/) never lift that bound, and the command line wins."""
    trainer = compose_cfg("train", [f"model={model}"]).trainer
    assert trainer.max_time == "10m" and trainer.max_steps is None
    assert compose_cfg("train", [f"model={model}", "trainer.max_steps=50"]).trainer.max_steps == 50


@pytest.mark.parametrize("optim", options("optim"))
def test_every_optimizer_is_a_partial(compose_cfg, optim):
    make = instantiate(compose_cfg("train", [f"optim={optim}"]).optim, _convert_="all")
    assert isinstance(make([torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg("train", [f"experiment={experiment}"])
    assert cfg.model._target_ and cfg.trainer._target_


@pytest.mark.parametrize("verb", ["sample", "eval"])
def test_verb_configs_compose(compose_cfg, verb):
    cfg = compose_cfg(verb, ["run_dir=/somewhere", "sampler=ddim"])
    assert cfg.run_dir == "/somewhere" and cfg.sampler._target_ == "genbench.samplers.DDIM"
