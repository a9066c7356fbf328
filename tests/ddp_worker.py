"""Worker for tests/test_distributed.py: trains a family with a deterministic loss with the real Trainer,
under torchrun or alone, into the folder given as argv[1]."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator

import torch
from torch import nn

from genbench import distributed
from genbench.data import ImageData
from genbench.models.base import GenerativeModel, LossTerm
from genbench.trainer import Trainer


class Autoencoder(GenerativeModel):
    """loss = mean over the batch of ||net(x) - x||^2: no noise, so 1 and N processes can agree exactly."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(16, 16)

    def training_losses(self, batch: torch.Tensor) -> Iterator[LossTerm]:
        x = batch.flatten(1)
        yield LossTerm("loss", (self.net(x) - x).pow(2).mean(), "model")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.net(torch.randn(n, 16, generator=generator)).view(n, 1, 4, 4).clamp(-1, 1)


if __name__ == "__main__":
    distributed.init(distributed.from_env())
    images = torch.randint(0, 256, (64, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    trainer = Trainer(sys.argv[1], max_steps=5, batch_size=16, device="cpu", grad_clip=None, log_every=1,
                      sample_every=0, checkpoint_every=0, progress=False)
    torch.manual_seed(0)  # as genbench train seeds before building the model
    trainer.fit(Autoencoder(), ImageData("toy", images, None), functools.partial(torch.optim.Adam, lr=1e-2))
