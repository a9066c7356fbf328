"""The machine record (a cached, never-lowered matmul peak) and FLOP accounting against closed forms."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import genbench.runtime as runtime
from genbench.compute import sample_flops_per_image, train_flops_per_image
from genbench.models.base import GenerativeModel, LossTerm


def test_machine_record_names_the_machine_and_caches_the_best_peak(tmp_path: Path, monkeypatch):
    cache = tmp_path / "machine.json"
    probes = iter([50e9, 20e9, 80e9])
    calls = []
    monkeypatch.setattr(runtime, "matmul_flop_per_s", lambda *a: calls.append(a) or next(probes))
    first = runtime.machine_record("cpu", cache=cache)
    assert {"cpu_model", "cpu_count", "torch_threads", "device_name", "torch_version"} <= set(first)
    assert first["peak_flop_per_s"] == {"fp32": 50e9} and len(calls) == 1
    assert runtime.machine_record("cpu", cache=cache)["peak_flop_per_s"]["fp32"] == 50e9 and len(calls) == 1  # cached
    # a later probe on a busy machine reads lower: the peak stays; a quieter one raises it
    assert runtime.machine_record("cpu", cache=cache, reprobe_after_s=0)["peak_flop_per_s"]["fp32"] == 50e9
    assert runtime.machine_record("cpu", cache=cache, reprobe_after_s=0)["peak_flop_per_s"]["fp32"] == 80e9
    assert type(first["torch_version"]) is str  # torch.__version__ is a str subclass weights_only loading refuses


def test_matmul_probe_moves_no_rng():
    before = torch.get_rng_state()
    assert runtime.matmul_flop_per_s(torch.device("cpu"), torch.float32, seconds=0.01, n=64) > 0
    assert torch.equal(before, torch.get_rng_state())


class Linear(GenerativeModel):
    """loss = ||W x||^2 / N for x of 16 features: forward 2*16*16 FLOPs per image, backward twice that."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(16, 16, bias=False)

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        yield LossTerm("loss", self.net(batch.flatten(1)).pow(2).mean(), "model")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, 16, generator=generator)
        for _ in range(3):  # three network evaluations per image
            z = self.net(z)
        return z.view(n, 1, 4, 4)


def test_training_flops_are_forward_plus_backward_and_leave_the_model_alone():
    model, batch = Linear(), torch.randn(8, 1, 4, 4)
    weights, rng = model.net.weight.detach().clone(), torch.get_rng_state()
    # forward 2*16*16; backward: the weight's gradient (2*16*16); the input needs none
    assert train_flops_per_image(model, batch) == 2 * 16 * 16 * 2
    assert torch.equal(model.net.weight, weights) and model.net.weight.grad is None
    assert torch.equal(rng, torch.get_rng_state())


def test_sampling_flops_are_per_image_at_the_sampler_nfe():
    assert sample_flops_per_image(Linear()) == pytest.approx(3 * 2 * 16 * 16)


def test_mfu_is_against_the_best_peak_seen_on_the_training_machine():
    from genbench.protocol import compute_record

    machine = {"cpu_model": "X", "cpu_count": 2, "torch_threads": 2, "device_name": "X", "torch_version": "2"}
    state = {"compute": {"train_flops": 1e12, "train_flops_per_image": 1e6}, "train_time": 10.0,
             "machine": {**machine, "peak_flop_per_s": {"fp32": 5e10}}}  # probed while the machine was busy
    here = {**machine, "peak_flop_per_s": {"fp32": 2e11}}
    assert compute_record(state, None, here, "fp32")["mfu"] == pytest.approx(1e11 / 2e11)
    elsewhere = {**here, "cpu_model": "Y"}  # another machine's peak says nothing about the training's
    assert compute_record(state, None, elsewhere, "fp32")["mfu"] == pytest.approx(1e11 / 5e10)
    assert compute_record({**state, "machine": None}, None, elsewhere, "fp32")["mfu"] == pytest.approx(1e11 / 2e11)
