"""Samplers against their papers' update rules and closed forms; the VLB in bits/dim."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from genbench.likelihoods import discretized_gaussian_log_prob
from genbench.models.diffusion import Diffusion
from genbench.samplers import DDIM, DDPM, DPMSolverPP2M, DPMSolverPP3M, sigma_grid, timesteps
from genbench.schedules import linear

SHAPE = (1, 4, 4)


class GaussianDenoiser(nn.Module):
    """The optimal eps-predictor for data x_0 ~ N(mu, s^2 I): E[x_0 | x_t] = mu + sqrt(ab) s^2 / v (x_t - sqrt(ab) mu),
    v = ab s^2 + 1 - ab, written as an eps prediction. s = 0 is a point mass at mu."""

    def __init__(self, alphas_cumprod: torch.Tensor, mu: float, s: float):
        super().__init__()
        self.register_buffer("ab", alphas_cumprod.float())
        self.mu, self.s = mu, s

    def x0_hat(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.ab[t][:, None, None, None]
        return self.mu + ab.sqrt() * self.s**2 / (ab * self.s**2 + 1 - ab) * (x_t - ab.sqrt() * self.mu)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.ab[t][:, None, None, None]
        return (x_t - ab.sqrt() * self.x0_hat(x_t, t)) / (1 - ab).sqrt()


def gaussian_model(mu: float, s: float, T: int = 1000, **kwargs) -> Diffusion:
    schedule = linear(T)
    return Diffusion(SHAPE, lambda image_shape: GaussianDenoiser(schedule.alphas_cumprod, mu, s), schedule,
                     clip_denoised=False, **kwargs)


def run(model: Diffusion, sampler, x_T: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sampler(model.predict_x0_eps, model.schedule.alphas_cumprod, x_T.clone(), lambda shape: torch.randn(shape, generator=g))


def test_spacings_follow_their_definitions():
    assert timesteps(1000, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert timesteps(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert timesteps(1000, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert timesteps(50, None, "leading") == list(range(49, -1, -1))
    with pytest.raises(ValueError, match="sampler.steps"):
        timesteps(50, 51, "leading")
    with pytest.raises(ValueError, match="sampler.spacing"):
        timesteps(50, 5, "uniform")


@pytest.mark.parametrize("make, message", [(lambda: DDIM(steps=0), r"sampler\.steps=0 must be at least 1"),
                                           (lambda: DPMSolverPP2M(spacing="uniform"), r"sampler\.spacing='uniform'"),
                                           (lambda: DDPM(variance="sigma"), r"sampler\.variance='sigma'"),
                                           (lambda: DDIM(eta=-1.0), r"sampler\.eta=-1\.0")])
def test_bad_sampler_values_fail_when_built(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_ddpm_full_chain_is_algorithm_2():
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - ab_t) eps) + sigma_t z, with sigma_t^2 = beta_t."""
    model = gaussian_model(0.3, 0.5, T=100)
    x_T = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(1))
    ours = run(model, DDPM(variance="beta"), x_T)
    betas, ab = model.schedule.betas, model.schedule.alphas_cumprod
    g, x = torch.Generator().manual_seed(0), x_T.clone()
    for i in reversed(range(100)):
        eps = model.net(x, torch.full((8,), i))
        x = (x - betas[i].item() / math.sqrt(1 - ab[i].item()) * eps) / math.sqrt(1 - betas[i].item())
        if i > 0:
            x = x + math.sqrt(betas[i].item()) * torch.randn(x.shape, generator=g)
    assert torch.allclose(ours, x, atol=1e-4)


def test_ddim_eta_one_is_ddpm_with_posterior_variance():
    """Song et al. 2021, Sec. 4.1: eta = 1 on the full step set gives the DDPM chain with sigma_t^2 = beta~_t."""
    model = gaussian_model(-0.2, 0.4, T=100)
    x_T = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(2))
    ddpm = run(model, DDPM(variance="beta_tilde"), x_T)
    ddim = run(model, DDIM(steps=None, eta=1.0), x_T)
    assert torch.allclose(ddpm, ddim, atol=1e-4)
    assert not torch.allclose(ddpm, run(model, DDIM(steps=None, eta=0.0), x_T), atol=1e-2)  # the noise matters


def exact_flow(model: Diffusion, x_T: torch.Tensor, t_from: int, t_to: int, mu: float, s: float) -> torch.Tensor:
    """The probability-flow ODE for Gaussian data in closed form: it maps x_t affinely onto x_s,
    x_s = sqrt(ab_s) mu + sqrt(v_s / v_t) (x_t - sqrt(ab_t) mu), v = ab s^2 + 1 - ab."""
    ab = model.schedule.alphas_cumprod
    ab_t, ab_s = ab[t_from].item(), ab[t_to].item()
    v_t, v_s = ab_t * s**2 + 1 - ab_t, ab_s * s**2 + 1 - ab_s
    return math.sqrt(ab_s) * mu + math.sqrt(v_s / v_t) * (x_T - math.sqrt(ab_t) * mu)


@pytest.mark.parametrize("sampler", [DPMSolverPP2M(steps=7), DDIM(steps=7, eta=0.0)])
def test_solvers_are_exact_for_a_point_mass(sampler):
    """With x_0 = mu a.s. the denoiser is constant and both exponential-integrator updates are exact."""
    mu = 0.37
    model = gaussian_model(mu, 0.0)
    x_T = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(run(model, sampler, x_T), torch.full_like(x_T, mu), atol=1e-5)


def solver_error(model: Diffusion, sampler_cls, steps: int, mu: float, s: float) -> float:
    """|solver - exact| at the end, where exact runs the closed-form flow to the solver's last timestep t_1
    and then applies the same final denoising step."""
    sampler = sampler_cls(steps=steps, spacing="trailing")
    ts = timesteps(1000, steps, "trailing")
    x_T = torch.randn(256, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    ours = run(model, sampler, x_T)
    x_t1 = exact_flow(model, x_T, ts[0], ts[-1], mu, s)
    exact = model.net.x0_hat(x_t1, torch.full((256,), ts[-1]))
    return (ours - exact).abs().max().item()


@pytest.mark.parametrize("mu, s", [(0.5, 0.3), (0.0, 0.5), (0.5, 1.0)])
def test_dpm_solver_pp_2m_converges_faster_than_ddim(mu, s):
    """Lu et al. 2022: DPM-Solver++(2M) is a second-order multistep method, DDIM its first-order
    counterpart. On Gaussian data both converge to the closed-form flow; over 100 -> 400 steps DDIM's
    error falls about 4x (order 1), 2M's by well over that, and 2M at 50 steps beats DDIM at 200."""
    model = gaussian_model(mu, s)
    dpm = {k: solver_error(model, DPMSolverPP2M, k, mu, s) for k in (50, 100, 400)}
    ddim = {k: solver_error(model, DDIM, k, mu, s) for k in (100, 200, 400)}
    assert dpm[400] < 3e-3
    assert 2.5 < ddim[100] / ddim[400] < 5.0, ddim
    assert dpm[100] / dpm[400] > 5.0, dpm
    assert dpm[50] < ddim[200], (dpm, ddim)


def test_karras_and_logsnr_grids_follow_their_definitions():
    """Karras et al. 2022 eq. 5 (rho = 7) and uniform log-SNR grids in sigma = sqrt((1 - ab) / ab), from index
    T-1 down to index 0, snapped to the nearest index in log sigma; always K distinct indices."""
    ab = linear(1000).alphas_cumprod
    log_sigma = 0.5 * (torch.log1p(-ab) - torch.log(ab))
    for spacing in ("karras", "logsnr"):
        for k in (5, 10, 50, 1000):
            ts = timesteps(1000, k, spacing, ab)
            assert len(ts) == k == DPMSolverPP2M(steps=k, spacing=spacing).nfe(1000) and ts == sorted(set(ts), reverse=True)
            assert ts[0] == 999 and ts[-1] == 0
    ts = sigma_grid(ab, 10, "logsnr")  # coarse enough that snapping moves each point by under half an index gap
    target = torch.linspace(log_sigma[-1].item(), log_sigma[0].item(), 10, dtype=torch.float64)
    gaps = (log_sigma[1:] - log_sigma[:-1])
    for t, want in zip(ts, target):
        assert abs(log_sigma[t] - want) <= gaps[max(t - 1, 0)] and abs(log_sigma[t] - want) <= gaps[min(t, 998)]
    rho, s_max, s_min = 7.0, log_sigma[-1].exp().item(), log_sigma[0].exp().item()
    want = [(s_max ** (1 / rho) + i / 9 * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho for i in range(10)]
    got = [log_sigma[t].exp().item() for t in sigma_grid(ab, 10, "karras")]
    assert all(abs(math.log(g / w)) < 0.3 for g, w in zip(got, want)), (got, want)  # snapped: within an index
    with pytest.raises(ValueError, match="needs the noise schedule"):
        timesteps(1000, 5, "karras")


def lambda_uniform_error(sampler_cls, steps: int, mu: float, s: float) -> float:
    """The solver's error against the closed-form flow on a schedule whose lambda = log(alpha / sigma) is
    linear in the index (801 indices, lambda from 5 to -5), so linspace steps are uniform in lambda and
    shrink with K everywhere (on a DDPM schedule the last steps before the data do not)."""
    ab = torch.sigmoid(2 * torch.linspace(5, -5, 801, dtype=torch.float64))
    net = GaussianDenoiser(ab, mu, s)

    def denoise(x, t):
        x_0 = net.x0_hat(x, t)
        a = ab[t][:, None, None, None]
        return x_0, (x - a.sqrt() * x_0) / (1 - a).sqrt()

    x_T = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours = sampler_cls(steps=steps, spacing="linspace")(denoise, ab, x_T.clone(), None)
    ts = timesteps(801, steps, "linspace")
    a_t, a_s = ab[ts[0]].item(), ab[ts[-1]].item()
    v_t, v_s = a_t * s**2 + 1 - a_t, a_s * s**2 + 1 - a_s
    x_last = math.sqrt(a_s) * mu + math.sqrt(v_s / v_t) * (x_T - math.sqrt(a_t) * mu)
    return (ours - net.x0_hat(x_last, torch.full((64,), ts[-1]))).abs().max().item()


@pytest.mark.parametrize("mu, s", [(0.5, 0.3), (0.0, 0.5), (0.5, 1.0)])
def test_orders_of_ddim_and_dpm_solver_pp_2m_3m(mu, s):
    """Halving the lambda step divides DDIM's error by about 2 (order 1), DPM-Solver++(2M)'s by about 4 and
    DPM-Solver++(3M)'s by at least 8 (order 3; on these smooth Gaussian denoisers it reaches about 16)."""
    ratios = {}
    for cls in (DDIM, DPMSolverPP2M, DPMSolverPP3M):
        e = [lambda_uniform_error(cls, k, mu, s) for k in (21, 41, 81)]
        ratios[cls.__name__] = e[1] / e[2]
    assert 1.7 < ratios["DDIM"] < 2.3 and 3.4 < ratios["DPMSolverPP2M"] < 4.6 and ratios["DPMSolverPP3M"] > 7.0, ratios


def test_dpm_solver_pp_3m_is_exact_for_a_point_mass():
    mu = -0.41
    model = gaussian_model(mu, 0.0)
    x_T = torch.randn(16, *SHAPE, generator=torch.Generator().manual_seed(3))
    for spacing in ("trailing", "karras", "logsnr"):
        assert torch.allclose(run(model, DPMSolverPP3M(steps=9, spacing=spacing), x_T), torch.full_like(x_T, mu), atol=1e-5)


def discretized_gaussian(levels: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """log P of each level under N(mean, std^2) binned onto the 256 levels (genbench.likelihoods)."""
    return discretized_gaussian_log_prob(levels, torch.full_like(levels, mean), torch.full_like(levels, math.log(std)))


def discretized_gaussian_data(s: float, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """n uint8 images whose pixels are i.i.d. N(0, s^2) discretized to the 256 levels, and their entropy in bits/dim."""
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    p = discretized_gaussian(levels, 0.0, s).double().exp()
    entropy_bits = -(p * p.clamp(min=1e-300).log2()).sum().item()
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(p.float(), n * 16, replacement=True, generator=g).reshape(n, *SHAPE).to(torch.uint8)
    return x, entropy_bits


def test_vlb_of_a_known_distribution():
    """Data with a known entropy H (a discretized Gaussian). Any model's bound is a cross-entropy, so
    E[VLB] >= H; with the optimal denoiser it is within a bit of H (the gap is the continuous model's
    mismatch with 8-bit data at small t), and a denoiser for the wrong variance scores worse."""
    x, entropy_bits = discretized_gaussian_data(0.2, 64, seed=5)
    vlb = {s: gaussian_model(0.0, s, vlb_timesteps=999).bits_per_dim(x, torch.Generator().manual_seed(0)) for s in (0.2, 0.12, 0.3)}
    best = vlb[0.2]["vlb"].mean().item()
    assert entropy_bits <= best <= entropy_bits + 1.0, (entropy_bits, best)
    assert best < vlb[0.12]["vlb"].mean().item() and best < vlb[0.3]["vlb"].mean().item()
    assert (vlb[0.2]["vlb_prior"] < 1e-3).all()  # x_T is almost exactly N(0, I) under the linear schedule


def test_vlb_stratified_estimate_is_unbiased():
    """vlb_timesteps=K estimates the sum over all T - 1 terms without bias: the means over seeds agree
    within a few standard errors."""
    x, _ = discretized_gaussian_data(0.5, 8, seed=6)
    def draws(k: int) -> torch.Tensor:
        model = gaussian_model(0.0, 0.5, T=200, vlb_timesteps=k)
        return torch.stack([model.bits_per_dim(x, torch.Generator().manual_seed(i))["vlb"].mean() for i in range(40)])
    full, strat = draws(199), draws(10)
    stderr = math.sqrt(full.var().item() / 40 + strat.var().item() / 40)
    assert abs(full.mean().item() - strat.mean().item()) < 4 * stderr + 1e-4
