"""Generative adversarial networks: a discriminator term, then a generator term, per training step.

Papers:
- Goodfellow et al. 2014, "Generative Adversarial Nets", arXiv:1406.2661: the game
  min_G max_D E_x[log D(x)] + E_z[log(1 - D(G(z)))] (eq. 1), and the non-saturating G loss (Sec. 3).
- Radford, Metz & Chintala 2016, "DCGAN", arXiv:1511.06434: the networks (genbench.networks.dcgan).
- Mao et al. 2017, "Least Squares GANs", arXiv:1611.04076: eq. 2 with the 0-1 coding (a = 0, b = c = 1).
- Lim & Ye 2017, "Geometric GAN", arXiv:1705.02894, and Miyato et al. 2018, "Spectral Normalization
  for GANs", arXiv:1802.05957: the hinge loss (Miyato eqs. 16-17) and spectral normalisation of D.
- Arjovsky, Chintala & Bottou 2017, "Wasserstein GAN", arXiv:1701.07875: a critic's E[D(x)] - E[D(G(z))]
  estimates the Wasserstein-1 distance.
- Gulrajani et al. 2017, "Improved Training of Wasserstein GANs", arXiv:1704.00028: the critic loss
  with gradient penalty (eq. 3; Algorithm 1: lambda = 10, n_critic = 5).
- Mescheder, Geiger & Nowozin 2018, "Which Training Methods for GANs do actually Converge?",
  arXiv:1801.04406: the R1 penalty (eq. 9), applied lazily as in Karras et al. 2020, arXiv:1912.04958, Sec. 3.1.
- Huang, Gokaslan, Kuleshov & Tompkin 2025, "The GAN is dead; long live the GAN! A Modern Baseline GAN"
  (R3GAN), arXiv:2501.05441: the relativistic pairing loss (RpGAN, Jolicoeur-Martineau 2019,
  arXiv:1807.00734) with zero-centred R1 and R2 penalties (their Sec. 2), Adam with beta1 = 0, and gamma
  and the learning rate decayed over a budget of images (base.cosine_decay; the Trainer's lr_decay_images).
- Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule", arXiv:1706.08500: D's learning
  rate d_lr_ratio times G's (optim.lr).
- Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training", arXiv:2006.10738
  (genbench.augment).
- Brock, Donahue & Simonyan 2019, "Large Scale GAN Training", arXiv:1809.11096: "standing statistics".

Every loss reads D's logit l = D(x) (the critic value for WGAN-GP): for the probabilistic losses
D(x) = sigmoid(l), so log D(x) = -softplus(-l) and log(1 - D(x)) = -softplus(l). The relativistic loss
(rpgan) pairs each real image with a fake one and reads the difference of their logits: D minimises
E softplus(l_fake - l_real), G minimises E softplus(l_real - l_fake) (G's term recomputes l_real with the
D just stepped, without gradient). The Trainer keeps an
EMA copy of the model (D excluded: `ema_skip`) and samples from it, so samples come from the EMA of G.
That copy averages G's weights but not its batch-norm statistics (they are copied from the trained G,
whose activations differ), so before sampling in eval mode G's batch-norm statistics are re-estimated
from its own outputs on fixed noise (`standing_statistics`, with torch's `swa_utils.update_bn`).
Both networks' optimizers are built from optim (conf/optim/, with the GAN values of conf/family/gan.yaml).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm
from torch.optim.swa_utils import update_bn

from genbench.augment import Policy, check_policies, diff_augment
from genbench.models.base import GenerativeModel, LossTerm, OptimizerFactory, cosine_decay, randn
from genbench.validate import check_choice, check_positive

log = logging.getLogger(__name__)
Loss = Literal["minimax", "nonsaturating", "hinge", "wgan_gp", "lsgan", "rpgan"]


# ---- objectives ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Objective:
    d: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # D's loss on (real, fake) logits, minimised by D
    g: Callable[[torch.Tensor], torch.Tensor]  # G's loss on fake logits (fake - real if relativistic), minimised by G
    output: Callable[[torch.Tensor], torch.Tensor]  # logit -> what the paper calls D(x) (logged as d_real, d_fake)
    boundary: float | None  # D calls an output above it real; None for a critic, which makes no decision
    n_critic: int = 1  # the paper's D steps per G step
    gp_lambda: float = 0.0  # the paper's gradient-penalty weight
    relativistic: bool = False  # G's loss reads l_fake - l_real of paired images; D's decision is per pair


def _identity(l: torch.Tensor) -> torch.Tensor:
    return l


OBJECTIVES: dict[str, Objective] = {
    # eq. 1: D maximises log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z))), which saturates early.
    "minimax": Objective(lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                         lambda f: -F.softplus(f).mean(), torch.sigmoid, 0.5),
    # Sec. 3: G maximises log D(G(z)) instead, same fixed point, strong gradients early.
    "nonsaturating": Objective(lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
                               lambda f: F.softplus(-f).mean(), torch.sigmoid, 0.5),
    # Miyato et al. eqs. 16-17: D's hinge on the margin 1, G raises the fake logits.
    "hinge": Objective(lambda r, f: F.relu(1 - r).mean() + F.relu(1 + f).mean(),
                       lambda f: -f.mean(), _identity, 0.0),
    # Gulrajani et al. eq. 3 (the penalty is added in training_losses) and Algorithm 1's defaults.
    "wgan_gp": Objective(lambda r, f: f.mean() - r.mean(), lambda f: -f.mean(), _identity, None, n_critic=5, gp_lambda=10.0),
    # Mao et al. eq. 2, 0-1 coding: D regresses real to 1 and fake to 0, G pushes fake to 1.
    "lsgan": Objective(lambda r, f: 0.5 * (r - 1).pow(2).mean() + 0.5 * f.pow(2).mean(),
                       lambda f: 0.5 * (f - 1).pow(2).mean(), _identity, 0.5),
    # RpGAN (Huang et al. 2025 Sec. 2): D lowers softplus(l_fake - l_real) of each pair, G (called on
    # l_fake - l_real) lowers softplus(l_real - l_fake); D calls the pair right when l_real > l_fake.
    "rpgan": Objective(lambda r, f: F.softplus(f - r).mean(), lambda d: F.softplus(-d).mean(), _identity, 0.0,
                       relativistic=True),
}


# ---- penalties -----------------------------------------------------------------------------
def interpolate(x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al. Algorithm 1, line 6: x_hat = eps x + (1 - eps) x_tilde, eps ~ U[0, 1] per image."""
    eps = torch.rand(x_real.shape[0], 1, 1, 1, device=x_real.device, dtype=x_real.dtype)
    return eps * x_real + (1 - eps) * x_fake


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], x_hat: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x_hat D(x_hat)||_2 - 1)^2] (Gulrajani et al. eq. 3, without lambda); differentiable in D."""
    x_hat = x_hat.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (torch.linalg.vector_norm(grad.flatten(1), dim=1) - 1).pow(2).mean()


def r1_penalty(real_logits: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """E_{p_D}[||grad_x D(x)||^2] (Mescheder et al. eq. 9, without gamma / 2); x_real must require grad.
    On generated images instead of real ones it is R2 (Mescheder et al. 2018; Huang et al. 2025 Sec. 2)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


@contextmanager
def frozen(module: nn.Module):
    """Build the graph with `module`'s parameters out of it, so a backward leaves them no gradient."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def world_size() -> int:
    """Processes the global batch is split over (torchrun), 1 otherwise: x.shape[0] times it is the images per step."""
    return torch.distributed.get_world_size() if torch.distributed.is_available() and torch.distributed.is_initialized() else 1


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Miyato et al. 2018: W / sigma(W) for every conv and linear weight, sigma by one power iteration
    per forward pass (torch's parametrization, which keeps u and v as buffers)."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            _spectral_norm(m)
    return module


class CollapseMonitor:
    """Warns, every `every` D steps, when D's accuracy stayed above `max_accuracy` (D has won and G
    learns little) or neither loss moved (a likely collapse). Warnings only: not part of the state."""

    def __init__(self, every: int, max_accuracy: float):
        self.every, self.max_accuracy = every, max_accuracy
        self.acc: list[torch.Tensor] = []
        self.losses: dict[str, list[torch.Tensor]] = {"d_loss": [], "g_loss": []}

    def record(self, name: str, loss: torch.Tensor, accuracy: torch.Tensor | None = None) -> None:
        if self.every:
            self.losses[name].append(loss.detach())
            if accuracy is not None:
                self.acc.append(accuracy)

    def end_step(self, step: int) -> None:
        if self.every and len(self.losses["d_loss"]) >= self.every:
            self._check(step)

    def _check(self, step: int) -> None:
        if self.acc and (acc := torch.stack(self.acc).mean().item()) > self.max_accuracy:
            log.warning("step %d: D's accuracy was %.3f over the last %d D steps: D has saturated and G gets little "
                        "signal (consider model.loss, model.d_lr_ratio, model.spectral_norm, model.r1_gamma or model.diff_augment)",
                        step, acc, self.every)
        spread = {k: torch.stack(v).std().item() for k, v in self.losses.items() if len(v) > 1}
        scale = {k: 1 + torch.stack(v).mean().abs().item() for k, v in self.losses.items() if len(v) > 1}
        if spread and all(spread[k] < 1e-3 * scale[k] for k in spread):
            log.warning("step %d: the losses have not moved over the last %d D steps (std %s): a likely collapse",
                        step, self.every, ", ".join(f"{k} {v:.2g}" for k, v in spread.items()))
        self.acc.clear()
        for v in self.losses.values():
            v.clear()


class GAN(GenerativeModel):
    ema_skip = ("D",)  # the Trainer's EMA averages G only: samples need no averaged D

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        generator: Callable[..., nn.Module],
        discriminator: Callable[..., nn.Module],
        loss: Loss = "nonsaturating",
        latent_dim: int = 100,
        n_critic: int | None = None,
        gp_lambda: float | None = None,
        r1_gamma: float = 0.0,
        r2_gamma: float = 0.0,
        r1_interval: int = 16,
        gamma_decay_images: float | None = None,
        gamma_final_ratio: float = 1.0,
        spectral_norm: bool = False,
        diff_augment: Sequence[Policy] = (),
        d_lr_ratio: float = 1.0,
        standing_stats: int = 512,
        monitor_every: int = 500,
        max_accuracy: float = 0.99,
    ):
        super().__init__()
        check_choice("model.loss", loss, Loss)
        self.diff_augment = check_policies(diff_augment)
        self.objective = OBJECTIVES[loss]
        self.n_critic = self.objective.n_critic if n_critic is None else n_critic
        self.gp_lambda = self.objective.gp_lambda if gp_lambda is None else gp_lambda
        for name, value, zero_ok in [("latent_dim", latent_dim, False), ("n_critic", self.n_critic, False),
                                     ("gp_lambda", self.gp_lambda, True), ("r1_gamma", r1_gamma, True), ("r2_gamma", r2_gamma, True),
                                     ("r1_interval", r1_interval, False), ("standing_stats", standing_stats, True),
                                     ("monitor_every", monitor_every, True), ("d_lr_ratio", d_lr_ratio, False),
                                     ("gamma_final_ratio", gamma_final_ratio, True)]:
            check_positive(f"model.{name}", value, allow_zero=zero_ok)
        if not 0 < max_accuracy <= 1:
            raise ValueError(f"model.max_accuracy={max_accuracy} must be in (0, 1], e.g. 0.99")
        self.image_shape, self.loss, self.latent_dim = tuple(image_shape), loss, latent_dim
        self.G = generator(image_shape=self.image_shape, latent_dim=latent_dim)
        self.D = discriminator(image_shape=self.image_shape)
        if spectral_norm:
            apply_spectral_norm(self.D)
        if self.gp_lambda > 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.D.modules()):
            log.warning("model.gp_lambda=%g with batch norm in D: the gradient penalty is per image and batch norm "
                        "mixes images (Gulrajani et al. Sec. 4 drop it); set model.discriminator.norm=none", self.gp_lambda)
        if gamma_decay_images is not None:
            check_positive("model.gamma_decay_images", gamma_decay_images)
        self.r1_gamma, self.r2_gamma, self.r1_interval, self.d_lr_ratio = r1_gamma, r2_gamma, r1_interval, d_lr_ratio
        self.gamma_decay_images, self.gamma_final_ratio = gamma_decay_images, gamma_final_ratio
        self.standing_stats = standing_stats
        # D steps so far: picks the steps that train G (n_critic) and R1 (r1_interval); a buffer, so resume is exact
        self.register_buffer("num_d_steps", torch.zeros((), dtype=torch.long))
        self.monitor = CollapseMonitor(monitor_every, max_accuracy)

    def optimizers(self, make: OptimizerFactory) -> dict[str, torch.optim.Optimizer]:
        """One optimizer per network, both from `make` (optim); D's learning rate is d_lr_ratio times G's (TTUR)."""
        d, g = make(self.D.parameters()), make(self.G.parameters())
        if self.d_lr_ratio != 1.0:
            for group in d.param_groups:
                group["lr"] *= self.d_lr_ratio
            log.info("TTUR: D's learning rate is %g x optim.lr = %g", self.d_lr_ratio, d.param_groups[0]["lr"])
        return {"d": d, "g": g}

    def critic(self, x: torch.Tensor) -> torch.Tensor:
        """D's logits on (DiffAugmented) images: (N, C, H, W) -> (N,). D is handed a view, never a leaf that
        requires grad: module backward hooks (torch.utils.flop_counter's, in genbench.compute) refuse such
        leaves inside the autograd.grad calls of the gradient penalty and R1."""
        if x.is_leaf and x.requires_grad:
            x = x.view_as(x)
        return self.D(diff_augment(x, self.diff_augment))

    def _stats(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean D(x) and D(G(z)) (critic values for WGAN-GP) and D's accuracy at its decision boundary."""
        d_real, d_fake = self.objective.output(real.detach()), self.objective.output(fake.detach())
        out = {"d_real": d_real.mean(), "d_fake": d_fake.mean()}
        if self.objective.relativistic:  # D decides per pair: right when the real image scores higher
            out["d_acc"] = (d_real - d_fake > self.objective.boundary).float().mean()
        elif self.objective.boundary is not None:
            out["d_acc"] = torch.cat([d_real > self.objective.boundary, d_fake <= self.objective.boundary]).float().mean()
        return out

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        """1. x_fake = G(z); 2. D's term on real and detached fake images (plus GP / lazy R1);
        3. every n_critic-th step, G's term on the same x_fake against the D just stepped."""
        x = batch  # (N, C, H, W) in [-1, 1]
        step = int(self.num_d_steps)
        self.num_d_steps += 1
        train_g = (step + 1) % self.n_critic == 0
        lazy_r1 = self.r1_gamma > 0 and step % self.r1_interval == 0
        lazy_r2 = self.r2_gamma > 0 and step % self.r1_interval == 0
        # 1. fake images; G's graph is kept only when its term follows
        z = torch.randn(x.shape[0], self.latent_dim, device=x.device)
        with torch.set_grad_enabled(train_g):
            x_fake = self.G(z)
        # 2. discriminator term; x_fake is detached, so D's backward leaves G no gradient
        x_real = x.detach().requires_grad_(lazy_r1)
        x_fake_d = x_fake.detach().requires_grad_(lazy_r2)
        real, fake = self.critic(x_real), self.critic(x_fake_d)
        loss_d = self.objective.d(real, fake)
        metrics = self._stats(real, fake)
        if self.gp_lambda > 0:
            metrics["gp"] = gradient_penalty(self.critic, interpolate(x, x_fake.detach()))
            loss_d = loss_d + self.gp_lambda * metrics["gp"]
        if self.objective.boundary is None:  # a critic: E[D(x)] - E[D(G(z))] estimates W_1 (Arjovsky et al. 2017)
            metrics["wasserstein"] = real.detach().mean() - fake.detach().mean()
        if lazy_r1 or lazy_r2:  # R3GAN's schedule: gamma decays with the images D has seen (1 = constant)
            decay = cosine_decay(step * x.shape[0] * world_size(), self.gamma_final_ratio, self.gamma_decay_images)
            if self.gamma_decay_images is not None:  # logged only where there is a schedule
                metrics["gamma_scale"] = torch.tensor(decay)
        if lazy_r1:  # Karras et al. 2020 Sec. 3.1: every r1_interval steps, weighted by the interval
            metrics["r1"] = r1_penalty(real, x_real)
            loss_d = loss_d + 0.5 * decay * self.r1_gamma * self.r1_interval * metrics["r1"]
        if lazy_r2:  # the same penalty at the generated images (R3GAN), on the same steps
            metrics["r2"] = r1_penalty(fake, x_fake_d)
            loss_d = loss_d + 0.5 * decay * self.r2_gamma * self.r1_interval * metrics["r2"]
        metrics = {k: v.detach() for k, v in metrics.items()}
        self.monitor.record("d_loss", loss_d, metrics.get("d_acc"))
        yield LossTerm("d_loss", loss_d, "d", metrics)
        # 3. generator term; D's weights are frozen while its graph is built, so only G gets gradients
        if train_g:
            with frozen(self.D):
                fake = self.critic(x_fake)
                if self.objective.relativistic:  # the pairs' real logits under the D just stepped
                    with torch.no_grad():
                        real = self.critic(x)
                    fake = fake - real
            loss_g = self.objective.g(fake)
            self.monitor.record("g_loss", loss_g)
            yield LossTerm("g_loss", loss_g, "g")
        self.monitor.end_step(step + 1)

    @torch.no_grad()
    def standing_statistics(self, batch_size: int = 256, seed: int = 0) -> None:
        """Set the running mean and variance of every batch-norm layer of G to their averages over the
        batches that `standing_stats` latents from a fixed seed produce (Brock et al. 2019), with torch's
        `update_bn` (a cumulative average: momentum None). G keeps its train/eval mode. standing_stats=0: off."""
        if self.standing_stats == 0:  # update_bn would reset the statistics and then average nothing
            return
        num, generator = self.standing_stats, torch.Generator().manual_seed(seed)
        update_bn([randn((min(batch_size, num - i), self.latent_dim), generator, self.device)
                   for i in range(0, num, batch_size)], self.G)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x = G(z), z ~ N(0, I); in eval mode with G's standing batch-norm statistics, so every image
        depends on its own z only, whatever n."""
        if not self.G.training:
            self.standing_statistics()
        z = randn((n, self.latent_dim), generator, self.device)
        return self.G(z).clamp(-1, 1)

    @torch.no_grad()
    def diagnostic_images(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Rows of G along straight lines between pairs of latents: smooth rows mean G did not memorise."""
        rows, steps = 8, 8
        z0, z1 = randn((2, rows, 1, self.latent_dim), generator, self.device)
        t = torch.linspace(0, 1, steps, device=self.device)[None, :, None]  # (1, steps, 1)
        z = (1 - t) * z0 + t * z1  # (rows, steps, latent_dim)
        if not self.G.training:
            self.standing_statistics()
        return {"interpolations": self.G(z.reshape(rows * steps, -1)).clamp(-1, 1)}

    def sampling_info(self) -> dict[str, object]:
        return {"sampler": "generator", "nfe": 1, "latent_dim": self.latent_dim, "standing_stats": self.standing_stats}
