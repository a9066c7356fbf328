"""The GAN family: which parameters each term moves, the losses' signs and values on hand-made logits,
the penalties against closed forms, spectral norm, DiffAugment, the collapse warning, a few-step run
of every loss through the Trainer, and exact resume."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from genbench.augment import color, cutout, diff_augment, translation
from genbench.checkpoint import load_checkpoint, load_model
from genbench.models.base import cosine_decay, randn
from genbench.models.gan import GAN, OBJECTIVES, CollapseMonitor, gradient_penalty, interpolate, r1_penalty
from genbench.networks.dcgan import Discriminator, Generator
from genbench.train import train
from tests.conftest import tiny_overrides

LOSSES = list(OBJECTIVES)


def tiny_gan(image_size: int = 16, d_norm: str = "none", **kwargs) -> GAN:
    def generator(image_shape, latent_dim):
        return Generator(image_shape, latent_dim, width=4)

    def discriminator(image_shape):
        return Discriminator(image_shape, width=4, norm=d_norm)

    return GAN((1, image_size, image_size), generator, discriminator, latent_dim=8, **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.named_parameters() if not torch.equal(before[k], v)}


# ---- the two terms ---------------------------------------------------------------------------
def grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def same(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize("d_norm", ["none", "batch"])
@pytest.mark.parametrize("loss", LOSSES)
def test_d_term_moves_only_d_and_g_term_only_g(loss, d_norm):
    """Run the terms as the Trainer does (zero_grad(set_to_none) on the term's own optimizer, backward,
    step, in order) and check which parameters each step moved, and that neither backward touched the
    other network's gradients (which the Trainer leaves in place until that network's own zero_grad)."""
    torch.manual_seed(0)
    model = tiny_gan(loss=loss, d_norm=d_norm, n_critic=1, r1_gamma=1.0, r1_interval=1)
    opts = model.optimizers(lambda params, **kw: torch.optim.Adam(params, **{"lr": 1e-2, **kw}))
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    def step(term, name: str, own: torch.nn.Module, other: torch.nn.Module) -> None:
        assert term.optimizer == name
        own_before, other_before, other_grads = snapshot(own), snapshot(other), grads(other)
        opts[name].zero_grad(set_to_none=True)
        term.loss.backward()
        assert same(grads(other), other_grads)  # this term's backward reached no parameter of the other network
        opts[name].step()
        assert not changed(other_before, other) and changed(own_before, own)

    for _ in range(2):  # the second round starts with the grads the first left behind
        terms = model.training_losses(x)
        step(next(terms), "d", model.D, model.G)
        step(next(terms), "g", model.G, model.D)  # computed after D's step, as in the Trainer
        assert next(terms, None) is None


def test_n_critic_trains_g_every_nth_step_and_counts_in_a_buffer():
    model = tiny_gan(n_critic=3)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    names = [[t.optimizer for t in model.training_losses(x)] for _ in range(6)]
    assert names == [["d"], ["d"], ["d", "g"], ["d"], ["d"], ["d", "g"]]
    assert model.state_dict()["num_d_steps"].item() == 6  # saved with the model, so resume is exact
    assert tiny_gan(loss="wgan_gp").n_critic == 5 and tiny_gan(loss="wgan_gp").gp_lambda == 10.0  # Gulrajani et al.
    assert tiny_gan(loss="hinge").n_critic == 1 and tiny_gan(loss="hinge").gp_lambda == 0.0


def test_optimizers_split_the_parameters_and_take_optim_values_with_ttur():
    """Both networks' optimizers come from the optim partial (its lr and betas reach them); D's lr is
    d_lr_ratio times G's (TTUR), and only D's."""
    from functools import partial

    make = partial(torch.optim.Adam, lr=1e-4, betas=(0.0, 0.9))
    model = tiny_gan(d_lr_ratio=4.0)
    opts = model.optimizers(make)
    ids = {k: {id(p) for g in o.param_groups for p in g["params"]} for k, o in opts.items()}
    assert ids["d"] == {id(p) for p in model.D.parameters()} and ids["g"] == {id(p) for p in model.G.parameters()}
    assert opts["g"].param_groups[0]["lr"] == 1e-4 and opts["d"].param_groups[0]["lr"] == pytest.approx(4e-4)
    assert opts["g"].param_groups[0]["betas"] == opts["d"].param_groups[0]["betas"] == (0.0, 0.9)
    plain = tiny_gan().optimizers(make)
    assert plain["d"].param_groups[0]["lr"] == plain["g"].param_groups[0]["lr"] == 1e-4
    with pytest.raises(ValueError, match=r"model\.d_lr_ratio=0"):
        tiny_gan(d_lr_ratio=0.0)


def test_the_trainer_ema_skips_d():
    assert GAN.ema_skip == ("D",) and all(isinstance(getattr(tiny_gan(), name), torch.nn.Module) for name in GAN.ema_skip)


# ---- the losses on hand-made logits -----------------------------------------------------------
def test_losses_match_their_formulas():
    r, f = torch.tensor([2.0, -0.5, 0.3]), torch.tensor([-1.5, 0.7, 0.0])
    sig = torch.sigmoid
    # eq. 1 with D = sigmoid(l), against torch's BCE as an independent reference
    bce = F.binary_cross_entropy_with_logits(r, torch.ones(3)) + F.binary_cross_entropy_with_logits(f, torch.zeros(3))
    for name in ("minimax", "nonsaturating"):
        assert torch.allclose(OBJECTIVES[name].d(r, f), bce)
        assert torch.allclose(OBJECTIVES[name].d(r, f), -(sig(r).log().mean() + (1 - sig(f)).log().mean()))
    assert torch.allclose(OBJECTIVES["minimax"].g(f), (1 - sig(f)).log().mean())  # G minimises log(1 - D(G(z)))
    assert torch.allclose(OBJECTIVES["nonsaturating"].g(f), -sig(f).log().mean())  # G maximises log D(G(z))
    assert torch.allclose(OBJECTIVES["hinge"].d(r, f), ((1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean()))
    assert torch.allclose(OBJECTIVES["hinge"].g(f), -f.mean())
    assert torch.allclose(OBJECTIVES["wgan_gp"].d(r, f), f.mean() - r.mean())
    assert torch.allclose(OBJECTIVES["wgan_gp"].g(f), -f.mean())
    assert torch.allclose(OBJECTIVES["lsgan"].d(r, f), 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean())
    assert torch.allclose(OBJECTIVES["lsgan"].g(f), 0.5 * ((f - 1) ** 2).mean())
    # values at the undecided D: log 4 for D (Goodfellow et al. Theorem 1 gives -log 4 for the game)
    zero = torch.zeros(4)
    assert OBJECTIVES["minimax"].d(zero, zero).item() == pytest.approx(math.log(4))
    assert OBJECTIVES["minimax"].g(zero).item() == pytest.approx(-math.log(2))
    assert OBJECTIVES["hinge"].d(zero, zero).item() == pytest.approx(2.0)


@pytest.mark.parametrize("loss", LOSSES)
def test_loss_signs(loss):
    """A D that scores real high and fake low has the lower D loss; G's loss falls as D rates its fakes
    more real; and D's gradient pushes real logits up and fake logits down."""
    obj = OBJECTIVES[loss]
    high, low = torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])
    assert obj.d(high, low) < obj.d(low, high)
    assert obj.g(high) < obj.g(low)
    r, f = torch.full((3,), 0.5, requires_grad=True), torch.full((3,), 0.5, requires_grad=True)
    obj.d(r, f).backward()
    assert (r.grad < 0).all() and (f.grad > 0).all()  # gradient descent raises D(x), lowers D(G(z))
    f = torch.full((3,), 0.5, requires_grad=True)
    obj.g(f).backward()
    assert (f.grad < 0).all()  # gradient descent on G raises D(G(z))


def test_rpgan_pairs_and_signs_on_hand_made_logits():
    """RpGAN (Huang et al. 2025): D's loss is mean softplus(l_fake - l_real) over the pairs, G's (fed
    l_fake - l_real) mean softplus(l_real - l_fake). It reads differences only (a shift of every logit changes
    nothing), pairs image i with image i (not every real with every fake), is log 2 at the undecided D, and
    D's gradient on a pair's two logits is equal and opposite."""
    obj = OBJECTIVES["rpgan"]
    r, f = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, -1.0, 0.5])
    assert torch.allclose(obj.d(r, f), F.softplus(f - r).mean())
    assert torch.allclose(obj.d(r + 7.0, f + 7.0), obj.d(r, f))  # relativistic: the difference is all that counts
    assert not torch.allclose(obj.d(r, f.flip(0)), obj.d(r, f))  # paired, so the order of the fakes matters
    assert torch.allclose(obj.g(f - r), F.softplus(r - f).mean())
    assert obj.d(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(math.log(2))
    assert obj.d(torch.tensor([1.0]), torch.tensor([-1.0])) < obj.d(torch.tensor([-1.0]), torch.tensor([1.0]))
    assert obj.g(torch.tensor([1.0])) < obj.g(torch.tensor([-1.0]))  # G gains when its fake outscores its real pair
    r, f = r.clone().requires_grad_(True), f.clone().requires_grad_(True)
    obj.d(r, f).backward()
    assert (r.grad < 0).all() and (f.grad > 0).all() and torch.allclose(r.grad, -f.grad)


class ConstantCritic(torch.nn.Module):
    """D(x) = c + a . x: a = 0 is a constant critic, whose R1 and R2 are 0; else both are ||a||^2."""

    def __init__(self, a: torch.Tensor, c: float = 0.3):
        super().__init__()
        self.a, self.c = torch.nn.Parameter(a), torch.nn.Parameter(torch.tensor(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.a).flatten(1).sum(1) + self.c


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_r1_and_r2_are_zero_at_a_constant_critic_and_enter_the_d_term(scale):
    """R3GAN's D term: softplus pairs + gamma/2 (R1 at the data + R2 at the fakes), both zero-centred:
    0 for a constant critic, ||a||^2 for a linear one, and the D term is exactly that sum."""
    torch.manual_seed(0)
    model = tiny_gan(loss="rpgan", r1_gamma=0.2, r2_gamma=0.4, r1_interval=1)
    a = scale * torch.randn(1, 16, 16)
    model.D = ConstantCritic(a)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    d_term = next(model.training_losses(x))
    expected = a.pow(2).sum().item()
    assert d_term.metrics["r1"].item() == pytest.approx(expected, abs=1e-6)
    assert d_term.metrics["r2"].item() == pytest.approx(expected, abs=1e-6)
    real, fake = d_term.metrics["d_real"].item(), d_term.metrics["d_fake"].item()
    assert 0.0 <= d_term.metrics["d_acc"].item() <= 1.0
    if scale == 0.0:  # a constant critic: every pair ties, the loss is log 2 and no penalty
        assert real == fake == pytest.approx(0.3) and d_term.loss.item() == pytest.approx(math.log(2))
    else:
        assert d_term.loss.item() > 0.5 * (0.2 + 0.4) * expected
    assert "r2" not in next(tiny_gan(loss="rpgan", r1_gamma=0.2, r1_interval=1).training_losses(x)).metrics  # r2_gamma=0: off


def test_cosine_decay_closed_form():
    """1 at 0 images, (1 + r) / 2 half way, r at the horizon and after it; 1 throughout without a horizon."""
    assert cosine_decay(0, 0.1, 100) == 1.0
    assert cosine_decay(50, 0.1, 100) == pytest.approx(0.55)
    assert cosine_decay(25, 0.0, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_decay(100, 0.1, 100) == pytest.approx(0.1) and cosine_decay(1e9, 0.1, 100) == pytest.approx(0.1)
    assert cosine_decay(1e9, 0.1, None) == 1.0


def test_scheduled_gamma_equals_the_constant_gamma_it_has_decayed_to():
    """R3GAN's gamma schedule: after k D steps of batch N, D's term with gamma decaying over H images is
    exactly D's term with the constant gamma * cosine_decay(k N, r, H), same weights and noise."""
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    k, horizon, ratio = 5, 40, 0.1
    scale = cosine_decay(k * 4, ratio, horizon)
    assert 0.1 < scale < 0.9  # mid-decay, so a schedule that did nothing (or everything) would fail
    torch.manual_seed(0)
    scheduled = tiny_gan(loss="rpgan", r1_gamma=0.2, r2_gamma=0.4, r1_interval=1, gamma_decay_images=horizon,
                         gamma_final_ratio=ratio)
    constant = tiny_gan(loss="rpgan", r1_gamma=0.2 * scale, r2_gamma=0.4 * scale, r1_interval=1)
    constant.load_state_dict(scheduled.state_dict())
    scheduled.num_d_steps.fill_(k)
    constant.num_d_steps.fill_(k)
    terms = []
    for model in (scheduled, constant):
        torch.manual_seed(1)
        terms.append(next(model.training_losses(x)))
    assert terms[0].loss.item() == pytest.approx(terms[1].loss.item(), rel=1e-6)
    assert terms[1].metrics["r1"].item() > 0  # the penalty is in the term, so the equality tests the scale
    assert terms[0].metrics["gamma_scale"].item() == pytest.approx(scale)
    assert "gamma_scale" not in terms[1].metrics  # the constant model logs no schedule


def test_hinge_margins_and_minimax_saturation():
    assert OBJECTIVES["hinge"].d(torch.tensor([1.5]), torch.tensor([-2.0])).item() == 0.0  # beyond the margins
    # eq. 1's G loss saturates where D confidently rejects the fakes; the non-saturating one does not
    f = torch.tensor([-8.0], requires_grad=True)
    OBJECTIVES["minimax"].g(f).backward()
    saturated = f.grad.abs().item()
    f.grad = None
    OBJECTIVES["nonsaturating"].g(f).backward()
    assert saturated < 1e-3 < f.grad.abs().item()


# ---- penalties against closed forms ------------------------------------------------------------
def test_gradient_penalty_closed_form():
    """D(x) = w <a, x> has grad w a everywhere: GP = (|w| ||a|| - 1)^2, with dGP/dw = 2 (|w| ||a|| - 1) ||a|| sign(w).
    D(x) = ||x||^2 / 2 has grad x: GP = mean_i (||x_hat_i|| - 1)^2."""
    torch.manual_seed(0)
    a = torch.randn(1, 2, 3, 3)
    w = torch.tensor(0.7, requires_grad=True)
    x_hat = torch.randn(5, 2, 3, 3)
    gp = gradient_penalty(lambda x: w * (a * x).sum(dim=(1, 2, 3)), x_hat)
    norm = a.norm().item()
    assert gp.item() == pytest.approx((0.7 * norm - 1) ** 2, rel=1e-5)
    gp.backward()
    assert w.grad.item() == pytest.approx(2 * (0.7 * norm - 1) * norm, rel=1e-5)
    gp = gradient_penalty(lambda x: 0.5 * x.pow(2).sum(dim=(1, 2, 3)), x_hat)
    assert gp.item() == pytest.approx(((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean().item(), rel=1e-5)


def test_interpolate_lies_on_the_segment():
    x, y = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    x_hat = interpolate(x, y)
    eps = ((x_hat - y) / (x - y)).flatten(1)  # the same eps for every pixel of an image
    assert torch.allclose(eps, eps[:, :1].expand_as(eps), atol=1e-4)
    assert bool((eps >= 0).all() and (eps <= 1).all())


def test_r1_closed_form():
    """R1 = E ||grad_x D(x)||^2: ||a||^2 for D(x) = <a, x>, mean_i ||x_i||^2 for D(x) = ||x||^2 / 2."""
    a, x = torch.randn(1, 1, 4, 4), torch.randn(3, 1, 4, 4).requires_grad_(True)
    assert r1_penalty((a * x).sum(dim=(1, 2, 3)), x).item() == pytest.approx(a.pow(2).sum().item(), rel=1e-5)
    assert r1_penalty(0.5 * x.pow(2).sum(dim=(1, 2, 3)), x).item() == pytest.approx(x.pow(2).sum().item() / 3, rel=1e-5)


def test_lazy_r1_and_gp_enter_the_d_term():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    model = tiny_gan(r1_gamma=1.0, r1_interval=2)
    has_r1 = ["r1" in next(model.training_losses(x)).metrics for _ in range(4)]
    assert has_r1 == [True, False, True, False]
    d = next(tiny_gan(loss="wgan_gp", spectral_norm=False).training_losses(x))
    assert {"gp", "wasserstein", "d_real", "d_fake"} <= set(d.metrics) and "d_acc" not in d.metrics
    assert d.metrics["wasserstein"].item() == pytest.approx((d.metrics["d_real"] - d.metrics["d_fake"]).item())


# ---- spectral norm -----------------------------------------------------------------------------
def test_spectral_norm_keeps_d_layers_near_unit_norm():
    torch.manual_seed(0)
    model = tiny_gan(spectral_norm=True)
    layers = [m for m in model.D.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == 3  # every conv of the 16x16 DCGAN discriminator: 16 -> 8 -> 4 -> 1
    with torch.no_grad():
        for m in layers:
            m.parametrizations.weight.original.mul_(25.0)  # far from unit norm before normalisation
        for _ in range(30):  # one power iteration per training-mode forward
            model.D(torch.randn(2, 1, 16, 16))
    model.D.eval()
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        raw = torch.linalg.matrix_norm(m.parametrizations.weight.original.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05) and raw > 2
    assert not any(hasattr(m, "parametrizations") for m in tiny_gan(spectral_norm=False).D.modules())


# ---- DiffAugment -------------------------------------------------------------------------------
def test_translation_shifts_each_image_with_zero_fill():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 16, 16) + 1  # no zeros of its own
    out = translation(x)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(8):
        shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if torch.equal(out[i], padded[i, :, 2 + dy : 18 + dy, 2 + dx : 18 + dx])]
        assert len(shifts) == 1


def test_cutout_and_color_keep_shape_and_gradient():
    torch.manual_seed(0)
    x = (torch.rand(8, 1, 16, 16) + 1).requires_grad_(True)
    cut = cutout(x)
    zeros = (cut == 0).flatten(1).sum(1)
    assert bool((zeros > 0).all() and (zeros <= 64).all())  # at most an 8x8 square of a 16x16 image
    (cut.sum() + color(x).sum()).backward()
    assert x.grad is not None and x.grad.shape == x.shape
    with pytest.raises(ValueError, match="model.diff_augment='rotate' is not one of: color, translation, cutout"):
        tiny_gan(diff_augment=["rotate"])


def test_diff_augment_applies_the_policies_in_order_with_the_same_draws():
    x = torch.rand(4, 1, 16, 16) + 1
    assert torch.equal(diff_augment(x, []), x)
    torch.manual_seed(3)
    ours = diff_augment(x, ["translation", "cutout"])
    torch.manual_seed(3)
    assert torch.equal(ours, cutout(translation(x)))


# ---- networks, sampling, monitor ---------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 64])
def test_dcgan_shapes(size):
    G, D = Generator((1, size, size), 16, width=4), Discriminator((1, size, size), width=4, norm="batch")
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, size, size) and bool((x.abs() <= 1).all()) and D(x).shape == (3,)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules()) == int(math.log2(size)) - 1


def test_dcgan_rejects_bad_sizes_and_norms():
    with pytest.raises(ValueError, match="data.image_size"):
        Generator((1, 28, 28))
    with pytest.raises(ValueError, match="model.generator.norm"):
        Generator((1, 32, 32), norm="layer")
    with pytest.raises(ValueError, match="model.loss"):
        tiny_gan(loss="wgan")
    for kwargs, message in [({"n_critic": 0}, r"model\.n_critic=0 must be positive"),
                            ({"max_accuracy": 1.5}, r"model\.max_accuracy=1\.5 must be in"),
                            ({"r1_gamma": -1.0}, r"model\.r1_gamma=-1\.0 must be non-negative")]:
        with pytest.raises(ValueError, match=message):
            tiny_gan(**kwargs)
    with pytest.raises(ValueError, match=r"model\.discriminator\.width=0 must be positive"):
        Discriminator((1, 16, 16), width=0)


def test_sample_is_seeded():
    model = tiny_gan().eval()
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, model.sample(5, generator=torch.Generator().manual_seed(4)))
    assert model.diagnostic_images(a)["interpolations"].shape == (64, 1, 16, 16)
    assert model.bits_per_dim(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)) == {}


def test_standing_statistics_are_g_own_batch_norm_statistics():
    """After the standing pass, G's first batch-norm layer holds the mean of its inputs over the fixed
    latents and the average of the per-batch (unbiased) variances, and an eval-mode image no longer
    depends on the rest of its batch."""
    torch.manual_seed(0)
    model = tiny_gan(standing_stats=256)
    model.G.main[1].running_mean.fill_(5.0)  # stale statistics, as the EMA copy inherits them
    model.eval()
    model.standing_statistics(batch_size=128, seed=0)
    assert not model.G.training  # the mode is kept
    z = randn((256, 8), torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        h = model.G.main[0](z[:, :, None, None])  # the input of the first batch norm, (256, C, 4, 4)
    bn = model.G.main[1]
    assert torch.allclose(bn.running_mean, h.mean(dim=(0, 2, 3)), atol=1e-6)
    var = (h[:128].var(dim=(0, 2, 3)) + h[128:].var(dim=(0, 2, 3))) / 2
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    model.sample(1)
    assert not model.G.training
    with torch.no_grad():
        z = torch.randn(9, 8)
        assert torch.allclose(model.G(z[:3]), model.G(z)[:3], atol=1e-6)  # equal up to float summation order
    off = tiny_gan(standing_stats=0).eval()
    off.G.main[1].running_mean.fill_(5.0)
    off.sample(2)
    assert bool((off.G.main[1].running_mean == 5.0).all())  # standing_stats=0 leaves the statistics alone


def test_collapse_monitor_warns_on_saturation_and_flat_losses(caplog):
    monitor = CollapseMonitor(every=10, max_accuracy=0.99)

    def steps(d_loss, g_loss, accuracy):
        for step in range(10):
            monitor.record("d_loss", torch.tensor(d_loss(step)), torch.tensor(accuracy))
            monitor.record("g_loss", torch.tensor(g_loss(step)))
            monitor.end_step(step + 1)

    with caplog.at_level(logging.WARNING, logger="genbench.models.gan"):
        steps(lambda s: 1.0 + 0.1 * (-1) ** s, lambda s: 0.5 + 0.1 * (-1) ** s, 0.6)  # healthy: D near chance, noisy losses
        assert not caplog.records
        steps(lambda s: 0.0, lambda s: 5.0, 1.0)  # D right every time, losses frozen
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "saturated" in text and "have not moved" in text


# ---- configs and the Trainer --------------------------------------------------------------------
@pytest.mark.parametrize("option", ["gan", "dcgan", "wgan_gp", "sngan"])
def test_every_gan_config_composes_and_builds(compose_cfg, option):
    from hydra.utils import instantiate

    cfg = compose_cfg("train", [f"model={option}", "model.generator.width=8", "model.discriminator.width=8"])
    model = instantiate(cfg.model, image_shape=(1, 32, 32), _convert_="all")
    assert isinstance(model, GAN) and model.loss == cfg.model.loss
    assert model.eval().sample(2).shape == (2, 1, 32, 32)



@pytest.mark.parametrize("option", ["gan", "dcgan", "wgan_gp", "sngan"])
def test_every_gan_gets_the_gan_trainer_settings_with_every_trainer(compose_cfg, option):
    """conf/family/gan.yaml: batch 64 and no clipping whatever trainer= is (#14: trainer=gpu too; the other
    trainers: tests/test_configs.py); the trainer preset's other values stay, and the command line wins."""
    cfg = compose_cfg("train", [f"model={option}", "trainer=gpu"])
    assert cfg.model._target_ == "genbench.models.gan.GAN" and cfg.trainer.max_steps == 100000
    assert cfg.trainer.batch_size == 64 and cfg.trainer.grad_clip is None
    assert compose_cfg("train", [f"model={option}", "trainer=gpu", "trainer.batch_size=32"]).trainer.batch_size == 32


def gan_overrides(data_root: Path, *extra: str) -> list[str]:
    return ["model=gan", *tiny_overrides(data_root), *extra]


@pytest.mark.parametrize("variant", [["model.loss=minimax"], ["model.loss=nonsaturating", "model.generator.norm=none"],
                                     ["model.loss=hinge", "model.spectral_norm=true", "model.discriminator.norm=none",
                                      "model.diff_augment=[color,translation,cutout]"],
                                     ["model=wgan_gp"], ["model.loss=lsgan", "model.r1_gamma=1", "model.r1_interval=2"]],
                         ids=["minimax", "nonsaturating", "hinge", "wgan_gp", "lsgan"])
def test_few_step_run_of_each_loss(compose_cfg, mnist_root: Path, tmp_path: Path, variant):
    cfg = compose_cfg("train", gan_overrides(mnist_root, *variant, "trainer.max_steps=5"))
    train(cfg, str(tmp_path / "run"))
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 5 and set(state["optimizers"]) == {"d", "g"}
    model, _ = load_model(tmp_path / "run")
    images = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 16, 16) and bool(torch.isfinite(images).all())
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_resume_is_bit_identical(compose_cfg, mnist_root: Path, tmp_path: Path):
    """6 steps in one go == 3 steps, then the same command with max_steps=6 in the same run dir; with
    n_critic, lazy R1, spectral norm's power iterations and DiffAugment all carrying state or noise."""
    extra = ["model.n_critic=2", "model.r1_gamma=1", "model.r1_interval=2", "model.diff_augment=[color,translation,cutout]",
             "model.gamma_decay_images=40", "model.gamma_final_ratio=0.1", "trainer.lr_decay_images=40", "trainer.lr_final_ratio=0.25"]

    def run(name: str, steps: int) -> dict:
        train(compose_cfg("train", gan_overrides(mnist_root, *extra, f"trainer.max_steps={steps}")), str(tmp_path / name))
        return load_checkpoint(tmp_path / name)

    full = run("full", 6)
    run("split", 3)
    resumed = run("split", 6)
    for key in ("model", "ema"):
        assert full[key].keys() == resumed[key].keys()
        for k in full[key]:
            assert torch.equal(full[key][k], resumed[key][k]), (key, k)
    assert full["model"]["num_d_steps"].item() == 6
    for name in ("d", "g"):
        for i, s in full["optimizers"][name]["state"].items():
            for k, v in s.items():
                assert torch.equal(v, resumed["optimizers"][name]["state"][i][k]), (name, i, k)
    # a different seed really gives different weights, so the comparison above can fail
    train(compose_cfg("train", gan_overrides(mnist_root, *extra, "trainer.max_steps=6", "seed=1")), str(tmp_path / "other"))
    other = load_checkpoint(tmp_path / "other")
    assert not torch.equal(other["model"]["G.main.0.weight"], full["model"]["G.main.0.weight"])


def test_bad_schedule_values_are_one_line_before_any_work(tmp_path: Path):
    from genbench.trainer import Trainer

    for kwargs, message in [({"lr_decay_images": 0}, r"trainer\.lr_decay_images=0 must be positive"),
                            ({"lr_final_ratio": -0.5}, r"trainer\.lr_final_ratio=-0\.5 must be non-negative")]:
        with pytest.raises(ValueError, match=message):
            Trainer(tmp_path / "run", **kwargs)
    for kwargs, message in [({"gamma_decay_images": -1}, r"model\.gamma_decay_images=-1 must be positive"),
                            ({"gamma_final_ratio": -1.0}, r"model\.gamma_final_ratio=-1\.0 must be non-negative")]:
        with pytest.raises(ValueError, match=message):
            tiny_gan(**kwargs)
    assert not (tmp_path / "run").exists()


def test_r3gan_learning_rate_follows_its_cosine_schedule(compose_cfg, mnist_root: Path, tmp_path: Path):
    """model=r3gan with its decays shortened to 40 images: after 3 steps of batch 8 (24 images, no warm-up)
    both networks' learning rate is optim.lr x cosine_decay(24, 0.25, 40), 2e-4 x 0.4273..."""
    cfg = compose_cfg("train", gan_overrides(mnist_root, "model=r3gan", "trainer.max_steps=3", "trainer.lr_warmup_steps=0",
                                             "model.gamma_decay_images=40", "trainer.lr_decay_images=40"))
    assert cfg.optim.lr == 2e-4 and cfg.trainer.lr_final_ratio == 0.25 and cfg.model.gamma_final_ratio == 0.1
    assert compose_cfg("train", ["model=r3gan"]).trainer.lr_decay_images == 20_000_000  # the paper's 20M images
    train(cfg, str(tmp_path / "run"))
    state = load_checkpoint(tmp_path / "run")
    for name in ("d", "g"):
        assert state["optimizers"][name]["param_groups"][0]["lr"] == pytest.approx(2e-4 * cosine_decay(24, 0.25, 40), rel=1e-9)


@pytest.mark.parametrize("size", [16, 32])
def test_resnet_pair_shapes(size):
    from genbench.networks import resnet_gan

    G, D = resnet_gan.Generator((1, size, size), 16, width=8), resnet_gan.Discriminator((1, size, size), width=8)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, size, size) and D(x).shape == (3,)


def test_bench_recipe_plumbing():
    """scripts/bench_gan.py's reimplementation of the pytorch/examples recipe: its networks' shapes, a
    few steps of its loop, and sampling in both batch-norm modes without moving G's statistics."""
    import importlib.util

    from genbench.data import ImageData

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_gan.py"
    spec = importlib.util.spec_from_file_location("bench_gan", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    data = ImageData("tiny", torch.randint(0, 256, (128, 1, 32, 32), dtype=torch.uint8), None)
    G, run = bench.train_recipe(data, budget=60.0, seed=0, max_steps=3)
    assert run["steps"] == 3 and run["images_seen"] == 192
    state = {k: v.clone() for k, v in G.state_dict().items()}
    for mode in ("train", "eval"):
        images = bench.recipe_samples(G, 70, seed=1, batch_norm_mode=mode)
        assert images.shape == (70, 1, 32, 32) and images.dtype == torch.uint8
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in state.items())
    assert bench.RecipeDiscriminator()(torch.zeros(2, 1, 32, 32)).shape == (2,)
