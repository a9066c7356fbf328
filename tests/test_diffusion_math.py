"""DDPM math against closed forms (Ho et al. 2020 eqs. 4, 6, 7) and schedule properties."""

from __future__ import annotations

import math

import pytest
import torch

from genbench.models.diffusion import Diffusion, EpsPrediction, VPrediction, X0Prediction
from genbench.networks.unet import UNet
from genbench.schedules import NoiseSchedule, cosine, linear, sigmoid


def tiny_diffusion(schedule: NoiseSchedule | None = None, **kwargs) -> Diffusion:
    def network(image_shape):
        return UNet(image_shape, base_channels=8, channel_mults=(1, 2), attn_resolutions=(), num_groups=4)

    return Diffusion((1, 8, 8), network, schedule or linear(100), **kwargs)


@pytest.mark.parametrize("make", [linear, cosine, sigmoid])
def test_schedules_are_float64_and_alpha_bar_strictly_decreasing_in_unit_interval(make):
    s = make(num_timesteps=1000)
    assert s.betas.dtype == torch.float64 and s.alphas_cumprod.dtype == torch.float64
    assert s.betas.shape == (1000,) and s.alphas_cumprod.shape == (1000,)
    ab = s.alphas_cumprod
    assert bool((ab > 0).all() and (ab < 1).all())
    assert bool((ab[1:] < ab[:-1]).all())


def test_linear_schedule_matches_ho_et_al():
    s = linear(1000)
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    # alpha_bar_T of the linear schedule is about 4e-5 (x_T is nearly pure noise).
    assert s.alphas_cumprod[-1].item() == pytest.approx(4.04e-5, rel=0.02)


@pytest.mark.parametrize("i", [0, 1, 10, 250, 500, 998])
def test_cosine_alpha_bar_matches_formula(i):
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731  (Nichol & Dhariwal eq. 17)
    # index i is t = i + 1; clipping at 0.999 only bites at the very end
    assert cosine(T).alphas_cumprod[i].item() == pytest.approx(f(i + 1) / f(0), rel=1e-9)


def test_cosine_clips_beta():
    assert cosine(1000).betas.max().item() == pytest.approx(0.999)


def test_bad_schedule_values_raise():
    with pytest.raises(ValueError, match="beta_start"):
        linear(10, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="num_timesteps"):
        cosine(1)
    with pytest.raises(ValueError, match=r"schedule\.max_beta=1\.5"):
        cosine(10, max_beta=1.5)
    with pytest.raises(ValueError, match=r"schedule\.s=-0\.1"):
        cosine(10, s=-0.1)


def test_q_sample_moments_match_closed_form():
    """Monte Carlo mean and variance of q(x_t | x_0) against N(sqrt(ab) x_0, (1 - ab) I) (eq. 4)."""
    torch.manual_seed(0)
    model = tiny_diffusion()
    x_0 = torch.rand(1, 1, 8, 8) * 2 - 1
    for i in (0, 30, 99):
        t = torch.full((20000,), i)
        x_t = model.q_sample(x_0.expand(20000, -1, -1, -1), t, torch.randn(20000, 1, 8, 8))
        ab = model.schedule.alphas_cumprod[i].item()
        assert torch.allclose(x_t.mean(0), math.sqrt(ab) * x_0[0], atol=4 * math.sqrt((1 - ab) / 20000) + 1e-6)
        assert torch.allclose(x_t.var(0), torch.full_like(x_0[0], 1 - ab), rtol=0.06)


def test_posterior_matches_bayes_rule():
    """q(x_{t-1} | x_t, x_0) from eqs. 6-7 equals the product of the Gaussians q(x_t | x_{t-1}) and
    q(x_{t-1} | x_0), computed here independently in float64."""
    model = tiny_diffusion()
    betas, ab = model.schedule.betas, model.schedule.alphas_cumprod
    x_0, x_t = torch.randn(4, 1, 8, 8, dtype=torch.float64), torch.randn(4, 1, 8, 8, dtype=torch.float64)
    for i in (1, 7, 50, 99):
        t = torch.full((4,), i)
        mean, var = model.q_posterior(x_0.float(), x_t.float(), t)
        a_t, ab_prev = 1 - betas[i], ab[i - 1]
        precision = 1 / (1 - ab_prev) + a_t / betas[i]
        expected_var = 1 / precision
        expected_mean = expected_var * (ab_prev.sqrt() * x_0 / (1 - ab_prev) + a_t.sqrt() * x_t / betas[i])
        assert torch.allclose(var.double().flatten()[0], expected_var, rtol=1e-5)
        assert torch.allclose(mean.double(), expected_mean, atol=1e-5)


def test_posterior_at_first_step_is_x0():
    """At t = 1 the posterior collapses onto x_0 (alpha_bar_0 = 1): zero variance."""
    model = tiny_diffusion()
    x_0, x_t = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    mean, var = model.q_posterior(x_0, x_t, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(mean, x_0, atol=1e-6) and float(var.max()) == 0.0


PREDICTIONS = [EpsPrediction(), X0Prediction(), VPrediction()]


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=lambda p: type(p).__name__)
def test_prediction_targets_convert_back_to_x0_and_eps(prediction):
    """Feeding the exact target as network output must give back the true x_0 and eps."""
    model = tiny_diffusion(schedule=cosine(100), prediction=prediction)
    x_0, eps = torch.rand(6, 1, 8, 8) * 2 - 1, torch.randn(6, 1, 8, 8)
    t = torch.tensor([0, 5, 20, 50, 80, 99])
    x_t = model.q_sample(x_0, t, eps)
    x0_hat, eps_hat = model._to_x0_eps(model.target(x_0, eps, t), x_t, t)
    assert torch.allclose(x0_hat, x_0, atol=2e-3)
    assert torch.allclose(eps_hat, eps, atol=2e-3)


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=lambda p: type(p).__name__)
def test_error_scale_is_the_ratio_of_target_to_x0_errors(prediction):
    """Perturb the exact network output by delta and measure what it does to x_0: ||delta||^2 / ||x_0 error||^2
    must be error_scale(SNR), computed here in float64 from alpha_bar alone."""
    schedule = cosine(100)
    model = tiny_diffusion(schedule=schedule, prediction=prediction)
    t = torch.tensor([1, 10, 40, 70, 95])
    x_0, eps, delta = torch.rand(5, 1, 8, 8) * 2 - 1, torch.randn(5, 1, 8, 8), 1e-2 * torch.randn(5, 1, 8, 8)
    x_t = model.q_sample(x_0, t, eps)
    x0_hat, _ = model._to_x0_eps(model.target(x_0, eps, t) + delta, x_t, t)
    measured = delta.pow(2).flatten(1).sum(1) / (x0_hat - x_0).pow(2).flatten(1).sum(1)
    ab = schedule.alphas_cumprod[t]
    snr = ab / (1 - ab)
    torch.testing.assert_close(measured.double(), prediction.error_scale(snr), rtol=2e-3, atol=0)


def test_min_snr_weights():
    """min-SNR-gamma (Hang et al. 2023): the weight on the x_0 error is min(SNR, gamma) for every target;
    the factors are written out here from the definitions (eps: SNR, x_0: 1, v: SNR + 1), not read from the objects."""
    for prediction, factor in (("eps", lambda snr: snr), ("x0", lambda snr: 1.0), ("v", lambda snr: snr + 1)):
        model = tiny_diffusion(prediction=prediction, loss_weighting="min_snr", min_snr_gamma=5.0)
        t = torch.arange(100)
        snr = model.snr[t]
        # loss on the target = factor(snr) x loss on x_0, so weight * factor must equal min(snr, 5)
        assert torch.allclose(model.loss_weight(t) * factor(snr), snr.clamp(max=5.0), rtol=1e-5)
    assert bool((tiny_diffusion(prediction="eps").loss_weight(torch.arange(100)) == 1).all())  # uniform: L_simple


@pytest.mark.parametrize("name, cls", [("eps", EpsPrediction), ("x0", X0Prediction), ("v", VPrediction)])
def test_prediction_shorthand_names_the_object(name, cls):
    assert type(tiny_diffusion(prediction=name).prediction) is cls


def test_sampling_is_seeded():
    model = tiny_diffusion().eval()
    a = model.sample(3, generator=torch.Generator().manual_seed(1))
    b = model.sample(3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(2)))


def test_training_loss_is_finite_and_trains_only_the_network():
    model = tiny_diffusion()
    (term,) = list(model.training_losses(torch.rand(4, 1, 8, 8) * 2 - 1))
    assert term.optimizer == "model" and torch.isfinite(term.loss)
    term.loss.backward()
    assert all(p.grad is not None for p in model.net.parameters() if p.requires_grad)
    assert list(model.state_dict()) == [k for k in model.state_dict() if k.startswith("net.")]


def test_unknown_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match="eps, x0, v"):
        tiny_diffusion(prediction="score")


@pytest.mark.parametrize("kwargs, key", [({"min_snr_gamma": 0.0}, "model.min_snr_gamma"), ({"vlb_timesteps": 0}, "model.vlb_timesteps"),
                                         ({"loss_weighting": "snr"}, "model.loss_weighting")])
def test_out_of_range_values_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        tiny_diffusion(**kwargs)


@pytest.mark.parametrize("kwargs, key", [
    ({"base_channels": 0}, "base_channels"), ({"num_res_blocks": -1}, "num_res_blocks"), ({"channel_mults": (1, 0)}, "channel_mults"),
    ({"channel_mults": ()}, "channel_mults"), ({"patch_size": 0}, "patch_size"), ({"dropout": 1.0}, "dropout"),
])
def test_unet_sizes_out_of_range_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=rf"model\.network\.{key}=") as info:
        UNet((1, 8, 8), **{"num_groups": 4, **kwargs})
    assert "\n" not in str(info.value)


def test_the_optimizer_comes_from_the_optim_config_alone():
    """The family takes no learning rate of its own: optim.lr (here 3e-4) reaches its one optimizer."""
    from functools import partial

    (opt,) = tiny_diffusion().optimizers(partial(torch.optim.Adam, lr=3e-4, betas=(0.9, 0.99))).values()
    assert opt.param_groups[0]["lr"] == 3e-4 and opt.param_groups[0]["betas"] == (0.9, 0.99)
