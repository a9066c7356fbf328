"""Train the domain classifier that genbench's Fashion-MNIST / MNIST metrics extract features with.

    python scripts/train_extractor.py --data fashion_mnist        # ~5 min on one CPU thread

Writes src/genbench/extractors/<stem>.safetensors and <stem>.json (sha256 of the weights, test
accuracy, the settings below, sha256 of the training images), which genbench.extractors checks on
every load. Commit both files. A retrained CNN gets a new sha256, hence a new extractor name, so its
numbers and cached statistics never mix with the old one's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from genbench import data as gdata
from genbench.extractors import SHIPPED_CNNS, cnn_paths, sha256_file
from genbench.extractors.cnn import DomainCNN, prepare

LABEL_FILES = {"train": "train-labels-idx1-ubyte", "test": "t10k-labels-idx1-ubyte"}


def load_labelled(name: str, root: str = "~/.cache/genbench/data"):
    """(train images, train labels, test images, test labels): uint8 (N, 1, 32, 32) and int64 (N,),
    read from the same source genbench.data reads the images from."""
    images = getattr(gdata, name)(root=root, image_size=32)
    idx_dir = gdata.DEBIAN_FASHION_MNIST if name == "fashion_mnist" and gdata.DEBIAN_FASHION_MNIST.is_dir() else None
    labels = {}
    for split, stem in LABEL_FILES.items():
        if idx_dir is not None:
            path = next(p for p in (idx_dir / f"{stem}.gz", idx_dir / stem) if p.is_file())
            labels[split] = torch.from_numpy(gdata.read_idx(path).astype(np.int64))
        else:  # torchvision's copy, in the same order genbench.data read the images
            import torchvision

            cls = {"fashion_mnist": "FashionMNIST", "mnist": "MNIST"}[name]
            ds = getattr(torchvision.datasets, cls)(os.path.expanduser(root), train=split == "train", download=False)
            labels[split] = torch.as_tensor(ds.targets, dtype=torch.int64)
    return images.train, labels["train"], images.test, labels["test"]


@torch.no_grad()
def accuracy(net: DomainCNN, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    correct = sum((net(prepare(images[i : i + batch_size]))[1].argmax(1) == labels[i : i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=[d for _, d in SHIPPED_CNNS.values()], default="fashion_mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    kind = next(k for k, (_, d) in SHIPPED_CNNS.items() if d == args.data)
    weights_path, meta_path = cnn_paths(kind)

    x_train, y_train, x_test, y_test = load_labelled(args.data)
    net = DomainCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = len(x_train) // args.batch_size
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))  # cosine decay
    g = torch.Generator().manual_seed(args.seed)
    start = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(x_train), generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            x = x_train[idx]
            # augment: shift the batch by up to 2 pixels (a roll moves only the 2-pixel zero border of the padded
            # 28x28 images around), so the features do not hinge on exact placement
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(prepare(x))[1], y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(net, x_test, y_test)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, test accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights_path))
    meta = {
        "sha256": sha256_file(weights_path),
        "test_accuracy": acc,
        "data": args.data,
        "train_images_sha256": gdata.ImageData(args.data, x_train, None).content_hash("train"),
        "settings": {k: v for k, v in vars(args).items() if k != "threads"},
        "train_seconds": round(time.time() - start, 1),
        "torch": torch.__version__,
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {weights_path} ({weights_path.stat().st_size / 1e6:.2f} MB), sha256 {meta['sha256']}")


if __name__ == "__main__":
    main()
