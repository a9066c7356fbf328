"""Feature extractors for FID, IS, KID and precision/recall, and which one each dataset gets.

Two kinds, both registered with torch-fidelity (`register_feature_extractor`) so that its
`calculate_metrics` runs every metric through them:

- ``fmnist-cnn`` / ``mnist-cnn``: a small classifier trained on the dataset's own training split by
  scripts/train_extractor.py (see `cnn.py` for why). Its weights ship in this folder as
  ``<stem>.safetensors`` with ``<stem>.json`` beside them (sha256, test accuracy, how it was
  trained); the sha256 is checked on every load.
- ``inception-v3``: torch-fidelity's TF-compatible Inception-v3, for RGB data. The weights come from
  eval.inception_weights=PATH, else torch.hub's cache, else a download.

Each is registered under a name that ends with its weights' sha256 prefix (``fmnist-cnn-1a2b3c4d``),
so numbers, cached reference statistics and TensorBoard tags never mix two sets of weights.

Channels: torch-fidelity's extractors take uint8 (N, 3, H, W). genbench.metrics repeats grey
images to 3 channels (R = G = B, as PIL's convert("RGB") does for a grey PNG) before any extractor
sees them: Inception then sees a grey photograph, and the CNN averages the channels back exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from genbench.validate import check_choice

HERE = Path(__file__).resolve().parent
ExtractorKind = Literal["fmnist-cnn", "mnist-cnn", "inception-v3"]

# The shipped CNNs: extractor kind -> (file stem in this folder, genbench.data builder it was trained on).
SHIPPED_CNNS: dict[str, tuple[str, str]] = {
    "fmnist-cnn": ("fmnist_cnn", "fashion_mnist"),
    "mnist-cnn": ("mnist_cnn", "mnist"),
}
# The default extractor for a run's data (its data._target_); anything else gets FALLBACK.
DEFAULT_FOR_DATA: dict[str, ExtractorKind] = {
    "genbench.data.fashion_mnist": "fmnist-cnn",
    # "genbench.data.mnist": "mnist-cnn" once mnist_cnn.safetensors ships (scripts/train_extractor.py --data mnist
    # needs MNIST, which could not be downloaded where genbench is built); until then MNIST gets Inception.
}
FALLBACK: ExtractorKind = "inception-v3"
INCEPTION_FILE = URL_INCEPTION_V3.rsplit("/", 1)[1]  # weights-inception-2015-12-05-6726825d.pth


@dataclass(frozen=True)
class Extractor:
    """A feature extractor registered with torch-fidelity, ready for calculate_metrics."""

    kind: ExtractorKind
    name: str  # registered torch-fidelity name: <kind>-<sha256[:8]>
    sha256: str  # of the weights file
    weights: str  # path of the weights file
    fidelity_kwargs: dict = field(default_factory=dict)  # extra calculate_metrics arguments

    def record(self) -> dict:
        """What metrics.json says about the extractor."""
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "weights": self.weights}


def default_extractor(data_target: str) -> ExtractorKind:
    """The extractor for a run whose config has data._target_ = `data_target`."""
    return DEFAULT_FOR_DATA.get(data_target, FALLBACK)


def resolve_extractor(kind: ExtractorKind, inception_weights: str | None = None) -> Extractor:
    """Find and verify the weights of extractor `kind`, register it with torch-fidelity, describe it."""
    check_choice("eval.extractor", kind, ExtractorKind)
    return _inception(inception_weights) if kind == "inception-v3" else _shipped_cnn(kind)


_SHA256: dict[tuple, str] = {}  # (path, size, mtime) -> sha256


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) so a 90 MB file is hashed once."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _SHA256[key] = h.hexdigest()
    return _SHA256[key]


def _register(name: str, cls: type[FeatureExtractorBase]) -> None:
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, cls)


# ---- the shipped CNNs ----------------------------------------------------------------------
def cnn_paths(kind: str) -> tuple[Path, Path]:
    """(weights .safetensors, provenance .json) of a shipped CNN."""
    stem, _ = SHIPPED_CNNS[kind]
    return HERE / f"{stem}.safetensors", HERE / f"{stem}.json"


def _shipped_cnn(kind: ExtractorKind) -> Extractor:
    weights, meta_path = cnn_paths(kind)
    data = SHIPPED_CNNS[kind][1]
    if not weights.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"eval.extractor={kind}: {weights.name} is not in {HERE}; train it with "
            f"`python scripts/train_extractor.py --data {data}` or pick another with eval.extractor=inception-v3")
    recorded = json.loads(meta_path.read_text())["sha256"]
    actual = sha256_file(weights)
    if actual != recorded:
        raise ValueError(f"eval.extractor={kind}: {weights} has sha256 {actual[:12]}..., but {meta_path.name} records "
                         f"{recorded[:12]}...; restore the file (git checkout) or retrain with scripts/train_extractor.py")
    name = f"{kind}-{actual[:8]}"
    _CNN_WEIGHTS[name] = str(weights)
    _register(name, CNNFeatureExtractor)
    return Extractor(kind, name, actual, str(weights))


_CNN_WEIGHTS: dict[str, str] = {}  # registered name -> weights file, read by CNNFeatureExtractor


def load_cnn(weights: str | Path):
    """The DomainCNN stored at `weights` (safetensors), in eval mode."""
    from safetensors.torch import load_file

    from genbench.extractors.cnn import DomainCNN

    net = DomainCNN()
    net.load_state_dict(load_file(str(weights)))
    return net.eval().requires_grad_(False)


class CNNFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity's face of DomainCNN: features 'features' (128-d, for FID/KID/PRC) and 'logits'
    (10 classes, for IS). torch-fidelity constructs it as cls(name, features_list, **kwargs)."""

    def __init__(self, name: str, features_list: list[str], **kwargs):
        super().__init__(name, features_list)
        self.net = load_cnn(_CNN_WEIGHTS[name])

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from genbench.extractors.cnn import prepare

        features, logits = self.net(prepare(x))
        out = {"features": features, "logits": logits}
        return tuple(out[k].float() for k in self.features_list)


# ---- Inception-v3 --------------------------------------------------------------------------
def inception_weights_path(path: str | None) -> Path:
    """eval.inception_weights if set, else torch.hub's cached copy, else download it there; offline with
    no copy, one error naming the option and the file to fetch."""
    if path:
        p = Path(os.path.expanduser(str(path)))
        if not p.is_file():
            raise FileNotFoundError(f"eval.inception_weights={path} is not a file; pass the path of {INCEPTION_FILE} "
                                    f"(from {URL_INCEPTION_V3})")
        return p
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    if not cached.is_file():
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(cached), progress=False)
        except (OSError, urllib.error.URLError) as e:
            raise FileNotFoundError(
                f"eval.inception_weights is not set and {INCEPTION_FILE} could not be downloaded ({type(e).__name__}); "
                f"fetch {URL_INCEPTION_V3} elsewhere and pass eval.inception_weights=/path/to/{INCEPTION_FILE}") from None
    return cached


def _inception(path: str | None) -> Extractor:
    weights = inception_weights_path(path)
    sha = sha256_file(weights)
    name = f"inception-v3-{sha[:8]}"
    _register(name, FeatureExtractorInceptionV3)
    return Extractor("inception-v3", name, sha, str(weights), {"feature_extractor_weights_path": str(weights)})
