"""Compose and instantiate every option of every config group, as `genbench train` would; every shipped
combination of model x trainer x experiment runs one training step; each config axis owns its values."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from genbench import CONF_DIR
from genbench.checkpoint import load_checkpoint
from genbench.data import DatasetNotFound
from genbench.models.base import GenerativeModel
from genbench.trainer import Trainer
from tests.conftest import write_mnist_like


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def optimizer_values(model: GenerativeModel, optim_cfg) -> dict[str, tuple]:
    """{optimizer name: (class name, lr, betas, weight decay)} of the optimizers the family builds."""
    opts = model.optimizers(instantiate(optim_cfg, _convert_="all"))
    return {k: (type(o).__name__, o.param_groups[0]["lr"], tuple(o.param_groups[0]["betas"]), o.param_groups[0]["weight_decay"])
            for k, o in opts.items()}


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
    cfg = compose_cfg("train", ["experiment=smoke", f"schedule@model.schedule={schedule}", f"sampler@model.sampler={sampler}",
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


# ---- each config axis owns its values (#16) ------------------------------------------------------
ADAM = (0.9, 0.999)
DEFAULTS = {  # `genbench train model=X`: the values the README's benchmark numbers were made with
    "diffusion": ({"model": ("Adam", 1e-3, ADAM, 0.0)}, 32, 1.0),
    "flow": ({"model": ("Adam", 1e-3, ADAM, 0.0)}, 32, 1.0),
    "gan": ({"d": ("Adam", 8e-4, (0.5, 0.999), 0.0), "g": ("Adam", 8e-4, (0.5, 0.999), 0.0)}, 64, None),
    "dcgan": ({"d": ("Adam", 2e-4, (0.5, 0.999), 0.0), "g": ("Adam", 2e-4, (0.5, 0.999), 0.0)}, 64, None),
    "wgan_gp": ({"d": ("Adam", 1e-4, (0.0, 0.9), 0.0), "g": ("Adam", 1e-4, (0.0, 0.9), 0.0)}, 64, None),
    "sngan": ({"d": ("Adam", 2e-4, (0.0, 0.9), 0.0), "g": ("Adam", 2e-4, (0.0, 0.9), 0.0)}, 64, None),
    "r3gan": ({"d": ("Adam", 2e-4, (0.0, 0.9), 0.0), "g": ("Adam", 2e-4, (0.0, 0.9), 0.0)}, 64, None),
    "vae": ({"model": ("Adam", 1e-3, ADAM, 0.0)}, 128, 1.0),
}


def test_every_model_has_its_defaults_listed():
    assert sorted(DEFAULTS) == options("model")


@pytest.mark.parametrize("model", options("model"))
def test_default_optimizer_and_trainer_values_of_every_model(compose_cfg, model):
    """The family presets (conf/family/) and variant recipes keep the values the benchmarks were run with."""
    cfg = compose_cfg("train", [f"model={model}", "size=smoke"])
    expected, batch_size, grad_clip = DEFAULTS[model]
    assert optimizer_values(instantiate(cfg.model, image_shape=(1, 16, 16), _convert_="all"), cfg.optim) == expected
    assert (cfg.trainer.batch_size, cfg.trainer.grad_clip) == (batch_size, grad_clip)


@pytest.mark.parametrize("model", options("model"))
def test_optim_lr_reaches_every_optimizer_of_every_family(compose_cfg, model):
    """The README's `optim=adamw optim.lr=5e-4` sets the class and lr of every optimizer, for every model;
    a family's betas (a GAN's) stay unless optim.betas is given too."""
    cfg = compose_cfg("train", [f"model={model}", "size=smoke", "optim=adamw", "optim.lr=5e-4"])
    values = optimizer_values(instantiate(cfg.model, image_shape=(1, 16, 16), _convert_="all"), cfg.optim)
    default_betas = {k: v[2] for k, v in DEFAULTS[model][0].items()}
    assert values == {k: ("AdamW", 5e-4, default_betas[k], 0.01) for k in default_betas}
    cfg = compose_cfg("train", [f"model={model}", "size=smoke", "optim.betas=[0.8,0.99]"])
    values = optimizer_values(instantiate(cfg.model, image_shape=(1, 16, 16), _convert_="all"), cfg.optim)
    assert {v[2] for v in values.values()} == {(0.8, 0.99)}


@pytest.mark.parametrize("trainer", options("trainer"))
def test_family_presets_apply_with_every_trainer(compose_cfg, trainer):
    """#14: `model=gan trainer=gpu` keeps the GAN's batch 64 and no clipping (and a diffusion model its
    lr 1e-3 and batch 32) whatever trainer= is; the trainer preset's own values stay; the command line wins."""
    reference = compose_cfg("train", [f"trainer={trainer}"]).trainer
    gan = compose_cfg("train", ["model=gan", f"trainer={trainer}"])
    assert (gan.trainer.batch_size, gan.trainer.grad_clip, gan.optim.lr) == (64, None, 8e-4)
    assert {k: v for k, v in gan.trainer.items() if k not in ("batch_size", "grad_clip")} == \
        {k: v for k, v in reference.items() if k not in ("batch_size", "grad_clip")}
    diffusion = compose_cfg("train", [f"trainer={trainer}"])  # the default model
    assert (diffusion.optim.lr, diffusion.trainer.batch_size) == (1e-3, 32)
    assert compose_cfg("train", ["model=gan", f"trainer={trainer}", "trainer.grad_clip=5"]).trainer.grad_clip == 5


def parameters(cfg) -> int:
    return sum(p.numel() for p in instantiate(cfg.model, image_shape=(1, 16, 16), _convert_="all").parameters())


@pytest.mark.parametrize("model", options("model"))
def test_size_smoke_shrinks_every_model(compose_cfg, model):
    """experiment=smoke (size=smoke) picks each family's small networks: under 60k parameters, and at
    least 10 times fewer than the default sizes."""
    small = parameters(compose_cfg("train", [f"model={model}", "experiment=smoke"]))
    assert small < 60_000 and 10 * small < parameters(compose_cfg("train", [f"model={model}"]))


@pytest.mark.parametrize("size", options("size"))
def test_every_size_builds_every_family(compose_cfg, size):
    """size= resizes whichever family is chosen; a family without a file for that size keeps its default."""
    for model in ("diffusion", "gan", "vae"):
        cfg = compose_cfg("train", [f"model={model}", f"size={size}"])
        own = (Path(CONF_DIR) / "size" / model / f"{size}.yaml").is_file()
        assert (parameters(cfg) == parameters(compose_cfg("train", [f"model={model}"]))) == (not own or size == "default")


def test_every_family_preset_is_named_by_a_model_and_every_size_file_by_a_family():
    families = set(options("family"))
    named = {line.split(":")[1].split("#")[0].strip() for m in options("model")
             for line in (Path(CONF_DIR) / "model" / f"{m}.yaml").read_text().splitlines() if "/family@_global_:" in line}
    assert named == families == {"diffusion", "flow", "gan", "vae"}
    sizes = {p.parent.name for p in (Path(CONF_DIR) / "size").glob("*/*.yaml")}
    assert sizes <= families and {p.stem for p in (Path(CONF_DIR) / "size").glob("*/*.yaml")} <= set(options("size"))


# ---- every shipped combination runs one training step (#13 case 9) ------------------------------
EXPERIMENTS = ["none", *options("experiment")]
COMBINATIONS = list(itertools.product(options("model"), options("trainer"), EXPERIMENTS))
# a fast subset for the default suite: every model, every trainer and every experiment at least once
FAST = [(options("model")[i % len(options("model"))], options("trainer")[i % len(options("trainer"))], EXPERIMENTS[i])
        for i in range(len(EXPERIMENTS))]
SHRINK = ["size=smoke", "data=mnist", "data.image_size=16", "trainer.device=cpu", "trainer.compile=false",
          "trainer.max_steps=1", "trainer.max_time=null", "trainer.batch_size=4", "trainer.sample_every=0",
          "trainer.checkpoint_every=0", "trainer.log_every=1", "trainer.eval_every=0", "trainer.progress=false", "~eval"]


def one_step(compose_cfg, root: Path, run_dir: Path, model: str, trainer: str, experiment: str) -> dict:
    from genbench.train import train

    chosen = [f"model={model}", f"trainer={trainer}"] + ([] if experiment == "none" else [f"experiment={experiment}"])
    cfg = compose_cfg("train", [*chosen, *SHRINK, f"data.root={root}"])
    train(cfg, str(run_dir))
    return load_checkpoint(run_dir)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), "MNIST", n_train=16, n_test=8)


def check_step(state: dict) -> None:
    assert state["step"] == 1 and state["images_seen"] == 4
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point())
    stepped = {k for k, o in state["optimizers"].items() if o["state"]}  # optimizers with Adam moments: they stepped
    model = state["config"]["model"]
    if "n_critic" not in model:  # diffusion, VAE
        assert stepped == {"model"}
    else:  # a GAN trains G on its first step only with one D step per G step
        n_critic = model["n_critic"] or (5 if model["loss"] == "wgan_gp" else 1)
        assert stepped == ({"d", "g"} if n_critic == 1 else {"d"})


@pytest.mark.parametrize("model, trainer, experiment", FAST)
def test_shipped_combinations_run_one_step(compose_cfg, data_root, tmp_path, model, trainer, experiment):
    check_step(one_step(compose_cfg, data_root, tmp_path / "run", model, trainer, experiment))


@pytest.mark.slow
@pytest.mark.parametrize("model, trainer, experiment", [c for c in COMBINATIONS if c not in FAST])
def test_every_shipped_combination_runs_one_step(compose_cfg, data_root, tmp_path, model, trainer, experiment):
    check_step(one_step(compose_cfg, data_root, tmp_path / "run", model, trainer, experiment))


@pytest.mark.parametrize("group, cls", [("prediction", "genbench.models.diffusion.Prediction"),
                                        ("likelihood", "genbench.likelihoods.PixelLikelihood")])
def test_every_prediction_and_likelihood_option_builds_its_object(compose_cfg, group, cls):
    from hydra.utils import get_class

    model = "diffusion" if group == "prediction" else "vae"
    for option in options(group):
        cfg = compose_cfg("train", [f"model={model}", "size=smoke", f"{group}@model.{group}={option}"])
        built = instantiate(cfg.model, image_shape=(1, 16, 16), _convert_="all")
        assert isinstance(getattr(built, group), get_class(cls))
        assert type(getattr(built, group)).__name__ == cfg.model[group]._target_.rsplit(".", 1)[1]


@pytest.mark.parametrize("verb", ["sample", "eval"])
def test_verb_configs_compose(compose_cfg, verb):
    cfg = compose_cfg(verb, ["run_dir=/somewhere", "sampler=ddim"])
    assert cfg.run_dir == "/somewhere" and cfg.sampler._target_ == "genbench.samplers.DDIM"


@pytest.mark.parametrize("model", ["diffusion", "flow"])
def test_gpu_size_trains_the_unet_families_at_the_gpu_batch(compose_cfg, model):
    """conf/family/ sizes batch 32 for a 2-core CPU; experiment=gpu (size=gpu) gives them trainer=gpu's 128."""
    assert compose_cfg("train", [f"model={model}"]).trainer.batch_size == 32
    cfg = compose_cfg("train", [f"model={model}", "experiment=gpu"])
    assert (cfg.trainer.batch_size, cfg.optim.lr) == (compose_cfg("train", ["trainer=gpu", "model=vae"]).trainer.batch_size, 1e-3)
