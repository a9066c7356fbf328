"""VAE: the math against torch.distributions and float64 references, the IWAE bound's identities,
a few training steps per likelihood through the real configs, and exact resume."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from genbench.checkpoint import load_checkpoint, load_model
from genbench.likelihoods import Bernoulli, DiscretizedGaussian, DiscretizedLogistic
from genbench.models.vae import VAE, active_units, gaussian_kl, log_normal
from genbench.networks.vae import Decoder, Encoder
from genbench.train import train


def tiny_vae(**kwargs) -> VAE:
    """An untrained VAE on 8x8 images with a 4-dimensional latent."""
    return VAE((1, 8, 8), partial(Encoder, widths=(8, 16)), partial(Decoder, widths=(8, 16)), **{"latent_dim": 4, **kwargs})


def grey_images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 1, 8, 8) uint8: smooth blobs on a black background, like the padded Fashion-MNIST borders."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centre = 2 + 4 * torch.rand(n, 2, 1, 1, generator=g)
    blob = torch.exp(-((yy - centre[:, :1]) ** 2 + (xx - centre[:, 1:]) ** 2) / 4)  # (n, 1, 8, 8)
    return (255 * blob * (blob > 0.2)).round().to(torch.uint8)


# ---- the math ----------------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, log_var = 2 * torch.randn(64, 16, generator=g), 3 * torch.randn(64, 16, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * log_var))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(gaussian_kl(mu, log_var), torch.distributions.kl_divergence(q, p), rtol=1e-5, atol=1e-5)


def test_log_normal_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    z, mu, log_var = torch.randn(3, 32, 8, generator=g).unbind(0)
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * log_var)).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, log_var), expected, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_the_reparameterization():
    # dz/dmu = 1 and dz/dlog_var = sigma * eps / 2 for z = mu + sigma * eps (Kingma & Welling, Sec. 2.4)
    mu = torch.randn(5, 3, requires_grad=True)
    log_var = torch.randn(5, 3, requires_grad=True)
    eps = torch.randn(5, 3)
    VAE.reparameterize(mu, log_var, eps).sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))
    torch.testing.assert_close(log_var.grad, 0.5 * torch.exp(0.5 * log_var.detach()) * eps)
    # in the model: the reconstruction term alone reaches every encoder parameter through z
    torch.manual_seed(0)
    model = tiny_vae()
    x = grey_images(4).float() / 127.5 - 1
    mu, log_var = model.encode(x)
    z = model.reparameterize(mu, log_var, torch.randn_like(mu))
    (-model.log_px(x, *model.decode(z)).mean()).backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_active_units_counts_dimensions_whose_posterior_mean_varies():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(1000, 5, generator=g) * torch.tensor([1.0, 0.5, 0.2, 0.05, 0.0])  # variances 1, .25, .04, .0025, 0
    assert int(active_units(mu)) == 3


# ---- the IWAE bound (Burda et al. 2016) --------------------------------------------------------
def test_iwae_with_one_sample_equals_the_one_sample_elbo():
    torch.manual_seed(0)
    model = tiny_vae().eval()
    x = grey_images(16).float() / 127.5 - 1
    l_1 = model.iwae_bound(x, 1, torch.Generator().manual_seed(7))
    with torch.no_grad():  # Kingma & Welling eq. 6: log p(x|z) + log p(z) - log q(z|x) at one z
        mu, log_var = model.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
        z = model.reparameterize(mu, log_var, eps)
        elbo = model.log_px(x, *model.decode(z)) + log_normal(z, 0 * mu, 0 * mu) - log_normal(z, mu, log_var)
    torch.testing.assert_close(l_1, elbo, rtol=1e-6, atol=1e-4)


def test_iwae_with_one_sample_agrees_on_average_with_the_analytic_kl_elbo():
    # Their difference, log p(z) - log q(z|x) + KL, has mean zero; a wrong log q or KL would show here.
    torch.manual_seed(0)
    model = tiny_vae().eval()
    x = (grey_images(16).float() / 127.5 - 1).repeat(250, 1, 1, 1)
    log_px, kl = model.elbo(x, torch.Generator().manual_seed(1))
    diff = model.iwae_bound(x, 1, torch.Generator().manual_seed(2)) - (log_px - kl)
    assert diff.mean().abs() < 4 * diff.std() / math.sqrt(len(diff))


def test_iwae_bound_is_non_decreasing_in_k():
    torch.manual_seed(0)
    model = tiny_vae().eval()
    with torch.no_grad():  # a decoder that depends strongly on z, so q (near the prior) is a poor proposal
        model.decoder.stem[0].weight.mul_(10)
    x = (grey_images(16).float() / 127.5 - 1).repeat(8, 1, 1, 1)
    bounds = [model.iwae_bound(x, k, torch.Generator().manual_seed(k)).mean().item() for k in (1, 4, 16, 64)]
    assert bounds == sorted(bounds) and bounds[-1] > bounds[0] + 1.0, bounds


def test_bits_per_dim_reports_elbo_terms_and_iwae_in_bits_per_dim():
    torch.manual_seed(0)
    model = tiny_vae(iwae_k=8).eval()
    x = grey_images(6)
    bpd = model.bits_per_dim(x, torch.Generator().manual_seed(3))
    assert set(bpd) == {"elbo", "elbo_recon", "elbo_kl", "iwae_k8"}
    assert all(v.shape == (6,) and bool(torch.isfinite(v).all()) for v in bpd.values())
    torch.testing.assert_close(bpd["elbo"], bpd["elbo_recon"] + bpd["elbo_kl"])
    log_px, kl = model.elbo(x.float() / 127.5 - 1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(bpd["elbo"], -(log_px - kl) / (64 * math.log(2)))
    assert bool((bpd["elbo_kl"] >= 0).all()) and bool((bpd["iwae_k8"] <= bpd["elbo"] + 0.05).all())


# ---- training options --------------------------------------------------------------------------
def test_bernoulli_refuses_grey_data_and_binarizes_on_request():
    x = grey_images(4).float() / 127.5 - 1
    with pytest.raises(ValueError, match="binarize=true"):
        next(tiny_vae(likelihood="bernoulli").training_losses(x))
    with pytest.raises(ValueError, match="binary data"):
        tiny_vae(likelihood=Bernoulli()).bits_per_dim(grey_images(2))
    term = next(tiny_vae(likelihood=Bernoulli(binarize=True)).training_losses(x))
    assert torch.isfinite(term.loss)
    assert set(tiny_vae(likelihood=Bernoulli(binarize=True)).bits_per_dim(grey_images(2), None)) == {
        "elbo_binarized", "elbo_recon_binarized", "elbo_kl_binarized", "iwae_k64_binarized"}
    binary = torch.where(x > 0, 1.0, -1.0)  # already binary: accepted as it is
    assert torch.isfinite(next(tiny_vae(likelihood="bernoulli").training_losses(binary)).loss)


@pytest.mark.parametrize("kwargs, message", [
    ({"likelihood": "poisson"}, "model.likelihood='poisson' is not one of: discretized_logistic, gaussian, bernoulli"),
    ({"sample_mode": "mode"}, "model.sample_mode='mode' is not one of: mean, sample"),
    ({"beta": -1.0}, "model.beta=-1.0 must be non-negative"),
    ({"latent_dim": 0}, "model.latent_dim=0 must be positive"),
    ({"iwae_k": 0}, "model.iwae_k=0 must be positive"),
])
def test_bad_options_raise_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        tiny_vae(**kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"widths": (8, 0)}, "model.encoder.widths=0 must be positive"), ({"widths": ()}, "model.encoder.widths=[]"),
    ({"patch_size": 0}, "model.encoder.patch_size=0 must be positive"),
])
def test_network_sizes_out_of_range_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        Encoder((1, 8, 8), 4, **kwargs)


@pytest.mark.parametrize("likelihood, channels", [(DiscretizedLogistic(), 2), (DiscretizedGaussian(scale="fixed"), 1),
                                                  (Bernoulli(), 1)])
def test_the_likelihood_sets_the_decoder_output_and_its_parameters(likelihood, channels):
    """The decoder outputs what the likelihood reads (location and log-scale, or logits), and the VAE scores
    with that object's log_prob."""
    torch.manual_seed(0)
    model = tiny_vae(likelihood=likelihood)
    out = model.decoder(torch.randn(3, 4))
    assert out.shape == (3, channels, 8, 8)
    loc, log_scale = model.decode(torch.randn(3, 4))
    assert loc.shape == (3, 1, 8, 8) and (log_scale is None) == isinstance(likelihood, Bernoulli)
    x = torch.where(torch.rand(3, 1, 8, 8) > 0.5, 1.0, -1.0)
    torch.testing.assert_close(model.log_px(x, loc, log_scale), likelihood.log_prob(x, loc, log_scale).flatten(1).sum(1))


def test_kl_warmup_counts_steps_in_a_buffer():
    model = tiny_vae(beta=2.0, kl_warmup_steps=4)
    x = grey_images(4).float() / 127.5 - 1
    weights = [next(model.training_losses(x)).metrics["kl_weight"].item() for _ in range(6)]
    assert weights == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
    assert int(model.steps_done) == 6 and "steps_done" in model.state_dict()


def test_free_bits_clamps_each_dimension_kl_from_below():
    x = grey_images(8).float() / 127.5 - 1
    torch.manual_seed(0)
    plain = tiny_vae(beta=0.0)
    clamped = tiny_vae(free_bits=100.0)  # far above any KL of this untrained model: the KL adds a constant
    clamped.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    loss_plain = next(plain.training_losses(x)).loss
    torch.manual_seed(1)
    term = next(clamped.training_losses(x))
    assert term.metrics["kl_bpd"] < 100.0 / (64 * math.log(2))
    torch.testing.assert_close(term.loss - loss_plain, torch.tensor(4 * 100.0 / (64 * math.log(2))))


# ---- the real configs, trained a few steps -----------------------------------------------------
def vae_overrides(data_root: Path, steps: int, *extra: str) -> list[str]:
    return ["model=vae", "experiment=smoke", "data=mnist", f"data.root={data_root}", "data.image_size=16",
            f"trainer.max_steps={steps}", "trainer.batch_size=8", "trainer.checkpoint_every=2", "trainer.sample_every=0",
            "trainer.log_every=2", "trainer.device=cpu", "trainer.progress=false", "~eval", *extra]


@pytest.mark.parametrize("options, likelihood, scale", [
    ([], DiscretizedLogistic, "learned"),
    (["likelihood@model.likelihood=gaussian"], DiscretizedGaussian, "learned"),
    (["likelihood@model.likelihood=gaussian", "model.likelihood.scale=fixed"], DiscretizedGaussian, "fixed"),
    (["model.likelihood=gaussian"], DiscretizedGaussian, "learned"),  # the shorthand: the defaults
    (["likelihood@model.likelihood=bernoulli", "model.likelihood.binarize=true"], Bernoulli, None),
    (["model.sample_mode=sample", "model.kl_warmup_steps=3", "model.free_bits=0.5"], DiscretizedLogistic, "learned"),
])
def test_every_vae_config_composes_and_instantiates(compose_cfg, options, likelihood, scale):
    cfg = compose_cfg("train", ["model=vae", *options])
    model = instantiate(cfg.model, image_shape=(1, 32, 32), _convert_="all")
    assert isinstance(model, VAE) and type(model.likelihood) is likelihood
    assert getattr(model.likelihood, "scale", None) == scale
    assert model.decoder(torch.zeros(2, model.latent_dim)).shape[1:] == (2 if scale == "learned" else 1, 32, 32)


@pytest.mark.parametrize("likelihood", ["discretized_logistic", "gaussian", "bernoulli"])
def test_smoke_train_then_sample_score_and_reload(compose_cfg, mnist_root, tmp_path, likelihood):
    extra = [f"likelihood@model.likelihood={likelihood}"] + (["model.likelihood.binarize=true"] if likelihood == "bernoulli" else [])
    train(compose_cfg("train", vae_overrides(mnist_root, 4, *extra)), str(tmp_path / "run"))
    model, state = load_model(tmp_path / "run")
    assert state["step"] == 4 and int(model.steps_done) == 4
    g = torch.Generator().manual_seed(0)
    images = model.sample(5, generator=g)
    assert images.shape == (5, 1, 16, 16) and torch.equal(images, model.sample(5, generator=torch.Generator().manual_seed(0)))
    bpd = model.bits_per_dim(torch.full((3, 1, 16, 16), 255, dtype=torch.uint8), g)
    assert all(bool(torch.isfinite(v).all()) and bool((v > 0).all()) for v in bpd.values())
    panels = model.diagnostic_images(torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, g)
    assert panels["reconstructions"].shape == (16, 1, 16, 16) and panels["interpolations"].shape == (16, 1, 16, 16)
    assert model.sampling_info()["decoder_output"] == "mean" and model.sampling_info()["likelihood"] == likelihood


def test_training_logs_recon_kl_elbo_and_active_units(compose_cfg, mnist_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(compose_cfg("train", vae_overrides(mnist_root, 2)), str(tmp_path / "run"))
    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/recon_bpd", "train/kl_bpd", "train/elbo_bpd", "train/active_units"} <= tags


def test_resume_is_exact(compose_cfg, mnist_root, tmp_path):
    """2N steps in one go equal N steps, then a restart in the same folder up to 2N: every tensor of the
    final checkpoint's model, EMA and optimizer states is bit-identical (the KL warm-up included)."""
    extra = ["model.kl_warmup_steps=5"]
    train(compose_cfg("train", vae_overrides(mnist_root, 6, *extra)), str(tmp_path / "straight"))
    train(compose_cfg("train", vae_overrides(mnist_root, 3, *extra)), str(tmp_path / "resumed"))
    train(compose_cfg("train", vae_overrides(mnist_root, 6, *extra)), str(tmp_path / "resumed"))
    a, b = (load_checkpoint(tmp_path / name) for name in ("straight", "resumed"))
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for sa, sb in zip(a["optimizers"]["model"]["state"].values(), b["optimizers"]["model"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_eval_records_active_units_on_the_held_out_images(compose_cfg, mnist_root, tmp_path):
    from genbench.data import mnist
    from hydra.utils import instantiate

    from genbench.models.vae import active_units
    from genbench.tblog import scalars

    train(compose_cfg("train", vae_overrides(mnist_root, 2)), str(tmp_path / "run"))
    eval_cfg = compose_cfg("eval", ["eval=smoke", "eval.extractor=fmnist-cnn", "eval.num_samples=24", "eval.num_reference=32",
                                    "eval.metrics.metrics=[fid]", "eval.likelihood_images=12", "eval.diagnostic_images=4",
                                    "eval.batch_size=24", f"eval.cache_dir={tmp_path / 'cache'}"]).eval
    record = instantiate(eval_cfg, _convert_="all").evaluate_run(tmp_path / "run", torch.device("cpu"))
    model, _ = load_model(tmp_path / "run")
    test = model.likelihood.observe(mnist(root=str(mnist_root), image_size=16).split("test")[:12].float() / 127.5 - 1)
    expected = int(active_units(model.encode(test)[0]))
    assert record["latent"] == {"active_units": expected, "latent_dim": model.latent_dim}
    assert scalars(record)["eval/active_units"] == expected

