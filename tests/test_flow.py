"""Flow matching against closed forms: the marginal path, the timestep densities' moments, the loss of the
exact velocity field, each ODE solver's order of convergence on Gaussian data (where the exact flow is
known), and the bits/dim of a Gaussian through the probability-flow ODE with Hutchinson's estimator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from genbench.checkpoint import load_model
from genbench.models.flow import TIME_SCALE, Flow, LogitNormal, Uniform
from genbench.samplers import DDIM, FlowAdamsBashforth, FlowEuler, FlowHeun
from tests.conftest import tiny_overrides

SHAPE = (1, 4, 4)
D = 16


class GaussianVelocity(nn.Module):
    """The exact velocity E[eps - x_0 | x_t = x] for x_0 ~ N(mu, Sigma), Sigma = Q diag(lam) Q^T, on the path
    x_t = (1 - t) x_0 + t eps: x_t ~ N(m_t, S_t), m_t = (1 - t) mu, S_t = (1 - t)^2 Sigma + t^2 I, and
    Cov(eps - x_0, x_t) = t I - (1 - t) Sigma, so v(x, t) = -mu + Q diag((t - (1 - t) lam) / ((1 - t)^2 lam + t^2)) Q^T (x - m_t).
    It takes the UNet's time input, t * TIME_SCALE. Counts its calls."""

    def __init__(self, mu: float, lam: torch.Tensor, q: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("lam", lam.double())
        self.register_buffer("q", torch.eye(D, dtype=torch.float64) if q is None else q.double())
        self.mu, self.calls = mu, 0

    def forward(self, x: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = (t_in.double() / TIME_SCALE)[:, None]  # (N, 1)
        y = (x.double().flatten(1) - (1 - t) * self.mu) @ self.q  # eigen-coordinates, (N, D)
        y = y * (t - (1 - t) * self.lam) / ((1 - t) ** 2 * self.lam + t**2)
        return (-self.mu + y @ self.q.T).reshape(x.shape).to(x.dtype)


def gaussian_flow(mu: float, lam: torch.Tensor, q: torch.Tensor | None = None, **kwargs) -> Flow:
    return Flow(SHAPE, lambda image_shape: GaussianVelocity(mu, lam, q), **kwargs)


# ---- the path and the timesteps -------------------------------------------------------------
def test_marginal_path_of_a_gaussian():
    """x_t = (1 - t) x_0 + t eps with x_0 ~ N(mu, s^2): mean (1 - t) mu, variance (1 - t)^2 s^2 + t^2;
    and the target eps - x_0 is dx_t/dt."""
    g = torch.Generator().manual_seed(0)
    mu, s, n = 0.4, 0.3, 400_000
    x_0 = mu + s * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    eps = torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    for t_value in (0.0, 0.25, 0.7, 1.0):
        t = torch.full((n,), t_value, dtype=torch.float64)
        x_t = Flow.interpolate(x_0, eps, t)
        var = (1 - t_value) ** 2 * s**2 + t_value**2
        assert x_t.mean().item() == pytest.approx((1 - t_value) * mu, abs=4 * math.sqrt(var / n))
        assert x_t.var().item() == pytest.approx(var, rel=4 * math.sqrt(2 / n))
        h = 1e-6
        assert torch.allclose((Flow.interpolate(x_0, eps, t + h) - x_t) / h, eps - x_0, atol=1e-6)


@pytest.mark.parametrize("logit_mean, logit_std", [(0.0, 1.0), (0.5, 0.6), (-1.0, 1.5)])
def test_logit_normal_moments(logit_mean, logit_std):
    """logit(t) ~ N(logit_mean, logit_std^2); E[t] and Var[t] against Gauss-Hermite quadrature of sigmoid."""
    torch.manual_seed(0)
    n = 200_000
    t = LogitNormal(logit_mean, logit_std)(n, torch.device("cpu")).double()
    assert bool(((t > 0) & (t < 1)).all())
    logit = torch.log(t) - torch.log1p(-t)
    assert logit.mean().item() == pytest.approx(logit_mean, abs=4 * logit_std / math.sqrt(n))
    assert logit.std().item() == pytest.approx(logit_std, rel=4 / math.sqrt(2 * n))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    sig = 1 / (1 + np.exp(-(logit_mean + logit_std * nodes)))
    mean = float((weights * sig).sum() / weights.sum())
    var = float((weights * sig**2).sum() / weights.sum()) - mean**2
    assert t.mean().item() == pytest.approx(mean, abs=4 * math.sqrt(var / n))
    assert t.var().item() == pytest.approx(var, rel=0.02)


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_logit_normal_with_a_uniform_share_has_the_mixture_cdf(p):
    """P(t <= a) = (1 - p) Phi(logit a) + p a at (0, 1): the uniform share lifts the ends' mass (at a = 0.02 from
    5e-5 to 0.004 at p = 0.2), and p = 0 is the plain logit-normal."""
    torch.manual_seed(0)
    n = 400_000
    t = LogitNormal(0.0, 1.0, uniform_weight=p)(n, torch.device("cpu")).double()
    for a in (0.02, 0.1, 0.5, 0.9):
        cdf = (1 - p) * 0.5 * (1 + math.erf(math.log(a / (1 - a)) / math.sqrt(2))) + p * a
        assert (t <= a).double().mean().item() == pytest.approx(cdf, abs=4 * math.sqrt(cdf * (1 - cdf) / n) + 1e-5)
    with pytest.raises(ValueError, match=r"model\.time_sampling\.uniform_weight=1\.5 must be a probability in \[0, 1\]"):
        LogitNormal(uniform_weight=1.5)


def test_uniform_moments_and_bad_values():
    torch.manual_seed(0)
    t = Uniform()(200_000, torch.device("cpu")).double()
    assert t.mean().item() == pytest.approx(0.5, abs=0.003) and t.var().item() == pytest.approx(1 / 12, rel=0.01)
    with pytest.raises(ValueError, match=r"model\.time_sampling\.logit_std=0"):
        LogitNormal(0.0, 0.0)
    with pytest.raises(ValueError, match=r"model\.time_sampling='beta' is not one of: logit_normal, uniform"):
        gaussian_flow(0.0, torch.ones(D), time_sampling="beta")
    with pytest.raises(ValueError, match=r"model\.sampler: DDIM is a diffusion sampler.*sampler=flow/euler"):
        gaussian_flow(0.0, torch.ones(D), sampler=DDIM())
    assert isinstance(gaussian_flow(0.0, torch.ones(D), time_sampling="uniform").time_sampling, Uniform)


def test_samplers_do_not_cross_families():
    """sampler=ddim on a flow run, or sampler=flow/euler on a diffusion run, is one line naming the options."""
    from genbench.models.diffusion import Diffusion
    from genbench.schedules import linear

    with pytest.raises(ValueError, match=r"model\.sampler: FlowEuler is not a diffusion sampler.*dpm_solver_3m"):
        Diffusion(SHAPE, lambda image_shape: nn.Identity(), linear(10), sampler=FlowEuler())


def test_loss_of_the_exact_velocity_is_the_irreducible_error():
    """With v = E[eps - x_0 | x_t], the loss at t is Var(eps - x_0 | x_t) = 1 + s^2 - (t - (1 - t) s^2)^2 / v_t,
    v_t = (1 - t)^2 s^2 + t^2 (Gaussian regression); averaged over t ~ U(0, 1) by quadrature. A wrong
    sign of the target or of the time scale would add the field's own size to it."""
    torch.manual_seed(0)
    mu, s = 0.2, 0.5
    model = gaussian_flow(mu, torch.full((D,), s**2), time_sampling="uniform")
    batch = mu + s * torch.randn(20_000, *SHAPE)
    (term,) = list(model.training_losses(batch))
    t = np.linspace(0, 1, 100_001)
    floor = np.trapezoid(1 + s**2 - (t - (1 - t) * s**2) ** 2 / ((1 - t) ** 2 * s**2 + t**2), t)
    assert term.name == "loss" and term.optimizer == "model"
    assert term.loss.item() == pytest.approx(floor, rel=0.01)


@pytest.mark.parametrize("t", [0.02, 0.5, 0.9])
def test_velocity_error_at_a_fixed_time_is_the_irreducible_error_there(t):
    """scripts/loss_by_time.py's quantity: at fixed t the exact velocity's error is Var(eps - x_0 | x_t)."""
    torch.manual_seed(1)
    mu, s = 0.2, 0.5
    model = gaussian_flow(mu, torch.full((D,), s**2))
    x_0 = mu + s * torch.randn(20_000, *SHAPE)
    err = model.velocity_error(x_0, torch.randn_like(x_0), torch.full((len(x_0),), t))
    assert err.shape == (20_000,)
    assert err.mean().item() == pytest.approx(1 + s**2 - (t - (1 - t) * s**2) ** 2 / ((1 - t) ** 2 * s**2 + t**2), rel=0.02)


# ---- the ODE solvers --------------------------------------------------------------------------
def solve(sampler, mu: float, s: float, x_1: torch.Tensor) -> torch.Tensor:
    model = gaussian_flow(mu, torch.full((D,), s**2), sampler=sampler)
    return model.sampler(lambda x, t: model.net(x, t * TIME_SCALE), x_1.clone())


@pytest.mark.parametrize("make, order", [(lambda k: FlowEuler(steps=k), 1), (lambda k: FlowHeun(steps=k), 2),
                                         (lambda k: FlowAdamsBashforth(steps=k, order=2), 2),
                                         (lambda k: FlowAdamsBashforth(steps=k, order=3), 3),
                                         (lambda k: FlowHeun(steps=k, shift=3.0), 2)])
@pytest.mark.parametrize("mu, s", [(0.3, 0.5), (-0.2, 1.6)])
def test_solver_order_of_convergence(make, order, mu, s):
    """The exact flow of N(mu, s^2) data carries x_1 to x_0 = mu + s x_1 (it keeps the standardised
    variable). Halving the step divides each solver's error by about 2^order."""
    x_1 = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = mu + s * x_1
    errors = [(solve(make(k), mu, s, x_1) - exact).abs().max().item() for k in (16, 32, 64)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(2**order * 0.75 < r < 2**order * 1.5 for r in ratios[1:]), (errors, ratios)
    assert errors[-1] < 0.2


def test_adams_bashforth_weights_on_equal_steps():
    """On a uniform grid the variable-step weights are the textbook ones: AB2 (3/2, -1/2) h, AB3
    (23/12, -16/12, 5/12) h (Hairer et al. III.1, Table 1.1); here h = -0.1 (time runs down)."""
    from genbench.samplers import _adams_bashforth_weights

    assert _adams_bashforth_weights(0.4, [0.5, 0.6]) == pytest.approx([-0.15, 0.05])
    assert _adams_bashforth_weights(0.4, [0.5, 0.6, 0.7]) == pytest.approx([-23 / 120, 16 / 120, -5 / 120])
    assert _adams_bashforth_weights(0.4, [0.5]) == pytest.approx([-0.1])  # Euler


def test_time_grid_and_nfe():
    """The grid runs from 1 to 0 (SD3's shift t' = s t / (1 + (s - 1) t) bends it towards noise), and
    sampling_info's NFE is the number of network calls sample() makes."""
    assert FlowEuler(steps=4).grid() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])
    assert FlowEuler(steps=2, shift=3.0).grid() == pytest.approx([1.0, 0.75, 0.0])
    for sampler, nfe in [(FlowEuler(steps=5), 5), (FlowHeun(steps=5), 9), (FlowAdamsBashforth(steps=5, order=3), 6),
                         (FlowAdamsBashforth(steps=5, order=2), 5)]:
        model = gaussian_flow(0.1, torch.full((D,), 0.04), sampler=sampler)
        x = model.sample(3, generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, *SHAPE) and model.net.calls == nfe == model.sampling_info()["nfe"]
    for bad, message in [(lambda: FlowEuler(steps=0), r"sampler\.steps=0"), (lambda: FlowHeun(shift=0.0), r"sampler\.shift=0\.0"),
                         (lambda: FlowAdamsBashforth(order=4), r"sampler\.order=4")]:
        with pytest.raises(ValueError, match=message):
            bad()


def test_samples_have_the_data_distribution():
    mu, s = 0.2, 0.2
    model = gaussian_flow(mu, torch.full((D,), s**2), sampler=FlowAdamsBashforth(steps=20))
    x = model.sample(2000, generator=torch.Generator().manual_seed(0))
    assert x.mean().item() == pytest.approx(mu, abs=0.005) and x.std().item() == pytest.approx(s, rel=0.02)


# ---- bits/dim through the probability-flow ODE -------------------------------------------------
def test_bits_per_dim_of_a_correlated_gaussian():
    """For x_0 ~ N(mu, Sigma) with a non-diagonal Sigma (so Hutchinson's estimate has variance), the flow's
    density is exactly N(mu, Sigma), and the dequantized NLL has the closed form
    E_u[-log N(x + u)] = 1/2 log det(2 pi Sigma) + 1/2 (x - mu)^T Sigma^-1 (x - mu) + 1/2 tr(Sigma^-1) delta^2 / 3,
    u ~ U(-delta, delta)^D, delta = 1/255; bits/dim adds log2(127.5). The estimate agrees within its standard error."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    lam = torch.linspace(0.01, 0.15, D, dtype=torch.float64)
    sigma = q @ torch.diag(lam) @ q.T
    mu = 0.1
    model = gaussian_flow(mu, lam, q, likelihood_steps=40)
    x_0 = mu + torch.randn(2000, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    images = ((x_0.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).reshape(-1, *SHAPE)
    bpd = model.bits_per_dim(images, torch.Generator().manual_seed(1))["ode"].double()
    r = images.double().flatten(1) / 127.5 - 1 - mu
    delta = 1 / 255
    nll = 0.5 * (torch.logdet(2 * math.pi * sigma) + ((r @ torch.linalg.inv(sigma)) * r).sum(1)
                 + torch.linalg.inv(sigma).trace() * delta**2 / 3)
    exact = nll / (D * math.log(2)) + math.log2(127.5)
    diff = bpd - exact
    assert diff.std().item() > 1e-3  # Hutchinson's and the dequantization's noise are there ...
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff)) + 2e-3  # ... and average out
    assert gaussian_flow(mu, lam * 3, q, likelihood_steps=40).bits_per_dim(images)["ode"].mean() > bpd.mean() + 0.1  # a worse model scores worse


# ---- the family in the Trainer ------------------------------------------------------------------
def test_trains_checkpoints_and_samples_with_another_sampler(compose_cfg, mnist_root: Path, tmp_path: Path):
    """`genbench train model=flow` at experiment=smoke sizes, then the run rebuilt with sampler=flow/euler
    (what `genbench sample/eval ... sampler=flow/euler sampler.steps=3` pass to load_model)."""
    from genbench.train import train

    train(compose_cfg("train", [*tiny_overrides(mnist_root, steps=3), "model=flow"]), str(tmp_path / "run"))
    model, state = load_model(tmp_path / "run")
    assert state["step"] == 3 and isinstance(model.sampler, FlowHeun) and model.sampling_info()["nfe"] == 7
    sampler = compose_cfg("sample", ["run_dir=x", "sampler=flow/euler", "sampler.steps=3"]).sampler
    model, _ = load_model(tmp_path / "run", sampler=dict(sampler))
    assert model.sampling_info()["sampler"] == "FlowEuler" and model.sampling_info()["nfe"] == 3
    x = model.sample(2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 16, 16) and bool(torch.isfinite(x).all()) and x.abs().max() <= 1
    bpd = model.bits_per_dim(torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8))["ode"]
    assert bpd.shape == (2,) and bool(torch.isfinite(bpd).all())
