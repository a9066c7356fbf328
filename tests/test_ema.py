"""The EMA's profiles against their closed forms: a fixed decay's memory, EDM2's power function and its
sigma_rel <-> gamma relation, the warm-up (a power profile until it caps), `skip`, exact resume, the
profiles kept for post-hoc selection, and the Trainer's keys."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from genbench.checkpoint import load_checkpoint
from genbench.ema import EMA, SIGMA_REL_MAX, power_beta, sigma_rel_to_gamma
from genbench.trainer import Trainer


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros((), dtype=torch.float64))


def average_of(make, values) -> float:
    """Run the EMA `make(model)` over a parameter that takes `values` at updates 0, 1, ... (starting
    from 0); the final average."""
    model = Scalar()
    ema = make(model)
    with torch.no_grad():
        for step, v in enumerate(values):
            model.p.fill_(v)
            ema.update(model, step)
    return ema.module.p.item()


def sigma_rel_of(gamma: float) -> float:
    """EDM2 Sec. 3.1: the relative standard deviation of the profile t^gamma."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


@pytest.mark.parametrize("sigma_rel, gamma", [(0.05, 16.97), (0.10, 6.94)])
def test_sigma_rel_to_gamma_matches_edm2(sigma_rel, gamma):
    """EDM2 Sec. 3.1 quotes gamma = 16.97 for sigma_rel = 0.05 and 6.94 for 0.10; and the map inverts sigma_rel(gamma)."""
    assert sigma_rel_to_gamma(sigma_rel) == pytest.approx(gamma, abs=0.01)
    for g in (0.0, 0.5, 3.0, 40.0):
        assert sigma_rel_to_gamma(sigma_rel_of(g)) == pytest.approx(g, rel=1e-6, abs=1e-6)
    assert sigma_rel_of((math.sqrt(5) - 3) / 2) == pytest.approx(SIGMA_REL_MAX)  # the widest profile there is


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.31, 1.0])
def test_sigma_rel_out_of_range_is_one_line_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"trainer\.ema_sigma_rel=.* must be in \(0, 0\.3003\)"):
        sigma_rel_to_gamma(bad)
    with pytest.raises(ValueError, match=r"trainer\.ema_sigma_rel"):
        Trainer(run_dir="unused", max_steps=1, device="cpu", ema_sigma_rel=bad)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.1, 0.2])
def test_power_ema_length_is_a_fraction_of_the_run(sigma_rel):
    """After N updates the power EMA weighs update tau (1-based) by (1 - beta_tau) prod_{k > tau} beta_k =
    (1 - (1 - 1/tau)^(g+1)) (tau/N)^(g+1) ~ (g+1) tau^g / N^(g+1): EDM2's power profile. So the mean
    age of the average is N (g+1)/(g+2) and its standard deviation sigma_rel times its peak N, at any N."""
    gamma = sigma_rel_to_gamma(sigma_rel)
    for n in (500, 2000):
        taus = [float(t) for t in range(1, n + 1)]
        mean = average_of(lambda m: EMA(m, sigma_rel=sigma_rel), taus)
        second = average_of(lambda m: EMA(m, sigma_rel=sigma_rel), [t * t for t in taus])
        assert mean / n == pytest.approx((gamma + 1) / (gamma + 2), rel=2e-3)
        assert math.sqrt(second - mean**2) / n == pytest.approx(sigma_rel, rel=2e-2)


def test_fixed_decay_remembers_a_fixed_number_of_steps():
    """Without warm-up the average after N updates weighs the value j updates back by (1 - beta) beta^j
    (and the initial 0 by beta^N). With p = 0, 1, ..., N-1 it lags the newest value by
    N - 1 - [(N - 1)(1 - beta^N) - (1 - beta) S],  S = sum_{j<N} j beta^j = beta (1 - N beta^(N-1) + (N-1) beta^N) / (1 - beta)^2,
    which tends to beta / (1 - beta) = 99 updates whatever N; an impulse halves in log(1/2) / log(beta) updates."""
    beta = 0.99
    for n in (300, 3000):
        lag = n - 1 - average_of(lambda m: EMA(m, decay=beta, warmup=False), [float(t) for t in range(n)])
        s = beta * (1 - n * beta ** (n - 1) + (n - 1) * beta**n) / (1 - beta) ** 2
        assert lag == pytest.approx(n - 1 - ((n - 1) * (1 - beta**n) - (1 - beta) * s), rel=1e-9)
    assert lag == pytest.approx(beta / (1 - beta), rel=1e-9)
    halflife = round(math.log(0.5) / math.log(beta))  # 69 updates
    impulse = average_of(lambda m: EMA(m, decay=beta, warmup=False), [1.0] + [0.0] * halflife)
    assert impulse == pytest.approx((1 - beta) * beta**halflife) and beta**halflife == pytest.approx(0.5, abs=0.01)


def profile(betas: list[float]) -> torch.Tensor:
    """The weight an EMA with these betas gives update tau after all of them: (1 - beta_tau) prod_{k > tau} beta_k."""
    b = torch.tensor(betas, dtype=torch.float64)
    later = torch.cat([torch.cumprod(b.flip(0), 0).flip(0)[1:], torch.ones(1, dtype=torch.float64)])
    return (1 - b) * later


def relative_width(w: torch.Tensor) -> float:
    t = torch.arange(1, len(w) + 1, dtype=torch.float64)
    mean = (w * t).sum()
    return math.sqrt((w * (t - mean) ** 2).sum()) / len(w)


def test_the_warmup_decay_is_a_power_ema_until_it_caps():
    """The warm-up beta_t = (1 + t) / (10 + t) gives 1 - beta = 9 / (10 + t) ~ (gamma + 1) / t with gamma = 8:
    EDM2's power profile at sigma_rel = sqrt(9 / (10^2 11)) ~ 0.0905, a length that follows the run. Only once
    (1 + t) / (10 + t) passes 0.999 (t > 8,990) does the fixed decay take over and the average stop growing
    with the run: at 30,000 steps its relative width is 1,000 / 30,000."""
    assert sigma_rel_of(8.0) == pytest.approx(0.0905, abs=1e-4) and sigma_rel_to_gamma(sigma_rel_of(8.0)) == pytest.approx(8.0)
    warm = lambda n: profile([EMA(Scalar(), decay=0.999).beta(s) for s in range(n)])  # noqa: E731
    for n in (300, 1523, 8000):
        w, power = warm(n), profile([power_beta(s, 8.0) for s in range(n)])
        assert w.sum() == pytest.approx(1.0) and 0.5 * (w - power).abs().sum() < 0.01, n  # total variation under 1%
        assert relative_width(w) == pytest.approx(sigma_rel_of(8.0), rel=0.03)
    assert relative_width(warm(30_000)) == pytest.approx(1000 / 30_000, rel=0.01)


def test_warmup_and_power_betas():
    ema = EMA(Scalar(), decay=0.999, warmup=True)
    assert [ema.beta(s) for s in (0, 1, 10_000)] == [pytest.approx(1 / 10), pytest.approx(2 / 11), 0.999]
    assert EMA(Scalar(), decay=0.9, warmup=False).beta(0) == 0.9
    power = EMA(Scalar(), decay=0.999, sigma_rel=0.1)  # the decay is unused
    g = sigma_rel_to_gamma(0.1)
    assert power.beta(0) == 0.0 and power.beta(99) == pytest.approx(0.99 ** (g + 1)) == power_beta(99, g)
    assert average_of(lambda m: EMA(m, sigma_rel=0.1), [3.0]) == 3.0  # beta_1 = 0: the first update copies the weights


def test_resume_is_bit_exact_and_skip_is_not_averaged():
    """The state is the averaged copy and beta depends on the step alone, so averaging from a state
    dict at step k gives the same bits as one pass; children named in skip keep their values."""
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.G, self.D = nn.Linear(3, 3), nn.Linear(3, 3)

    torch.manual_seed(0)
    model = Two()
    trajectory = [{k: torch.randn_like(v) for k, v in model.state_dict().items()} for _ in range(30)]

    init = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh(**kwargs) -> EMA:
        model.load_state_dict(init)
        return EMA(model, skip=("D",), **kwargs)

    def run(ema: EMA, steps: range) -> None:
        for step in steps:
            model.load_state_dict(trajectory[step])
            ema.update(model, step)

    for kwargs in ({"decay": 0.9}, {"sigma_rel": 0.15}):
        one = fresh(**kwargs)
        d_before = one.module.D.weight.clone()
        run(one, range(30))
        first = fresh(**kwargs)
        run(first, range(12))
        second = fresh(**kwargs)
        second.module.load_state_dict(first.module.state_dict())
        run(second, range(12, 30))
        for k, v in one.module.state_dict().items():
            assert torch.equal(v, second.module.state_dict()[k]), k
        assert torch.equal(one.module.D.weight, d_before)  # D: never averaged
        assert not torch.equal(one.module.G.weight, trajectory[-1]["G.weight"])  # G: averaged, not copied


def test_kept_power_emas_are_picked_post_hoc(compose_cfg, mnist_root: Path, tmp_path: Path):
    """trainer.ema_profiles keeps power EMAs beside the Trainer's own: a kept profile of the Trainer's own
    sigma_rel holds the same bits as it; load_model(ema=<sigma_rel>) picks one; one not kept is one line."""
    from genbench.checkpoint import load_model
    from genbench.train import train
    from tests.conftest import tiny_overrides

    train(compose_cfg("train", [*tiny_overrides(mnist_root, steps=3), "trainer.ema_sigma_rel=0.2",
                                "trainer.ema_profiles=[0.05,0.2]"]), str(tmp_path))
    state = load_checkpoint(tmp_path)
    assert set(state["ema_profiles"]) == {"0.05", "0.2"}
    for k, v in state["ema"].items():
        assert torch.equal(v, state["ema_profiles"]["0.2"][k]), k
    assert any(not torch.equal(v, state["ema_profiles"]["0.05"][k]) for k, v in state["ema"].items() if v.is_floating_point())
    model, _ = load_model(tmp_path, ema=0.05)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state["ema_profiles"]["0.05"][k]), k
    with pytest.raises(ValueError, match=r"ema=0.1: .*kept: 0.05, 0.2.*trainer.ema_profiles"):
        load_model(tmp_path, ema=0.1)


def test_trainer_config_key(compose_cfg, tmp_path: Path):
    """trainer.ema_sigma_rel is in every trainer preset (null: the fixed decay) and reaches the Trainer."""
    from hydra.utils import instantiate

    cfg = compose_cfg("train", ["trainer.ema_sigma_rel=0.1", "trainer.device=cpu"])
    trainer = instantiate(cfg.trainer, run_dir=str(tmp_path), seed=0, _convert_="all")
    assert trainer.ema_sigma_rel == 0.1
    assert compose_cfg("train", ["trainer=gpu"]).trainer.ema_sigma_rel is None


@pytest.mark.slow
def test_power_ema_run_resumes_bit_identically(compose_cfg, mnist_root: Path, tmp_path: Path):
    """trainer.ema_sigma_rel through the Trainer: 4 steps in one go == 2 steps, then resumed to 4."""
    from genbench.train import train
    from tests.conftest import tiny_overrides

    def run(name: str, steps: int) -> dict:
        train(compose_cfg("train", [*tiny_overrides(mnist_root, steps=steps), "trainer.ema_sigma_rel=0.1",
                                    "trainer.ema_profiles=[0.05]"]), str(tmp_path / name))
        return load_checkpoint(tmp_path / name)

    full = run("full", 4)
    run("split", 2)
    resumed = run("split", 4)
    for k, v in full["ema"].items():
        assert torch.equal(v, resumed["ema"][k]), k
        assert torch.equal(full["ema_profiles"]["0.05"][k], resumed["ema_profiles"]["0.05"][k]), k
    assert any(not torch.equal(v, full["model"][k]) for k, v in full["ema"].items() if v.is_floating_point())  # averaged
