"""Feature extractors for FID, IS, KID and precision/recall (each dataset names its own: `extractor:`
in conf/data/*.yaml).

Two kinds, both registered with torch-fidelity (`register_feature_extractor`), so that genbench.metrics
builds them with torch-fidelity's `create_feature_extractor` and its `fidelity` command accepts their names:

- ``fmnist-cnn`` / ``mnist-cnn``: a small classifier trained on the dataset's own training split by
  scripts/train_extractor.py (see `cnn.py` for why). Its weights ship in this folder as
  ``<stem>.safetensors`` with ``<stem>.json`` beside them (sha256, test accuracy, how it was
  trained); the sha256 is checked on every load.
- ``inception-v3``: torch-fidelity's TF-compatible Inception-v3, for RGB data. The weights come from
  eval.inception_weights=PATH, else torch.hub's cache, else a download. They are read with
  ``torch.load(weights_only=True)`` and checked against the network's keys and shapes before anything
  else (`SafeInceptionV3`): a crafted pickle is refused with nothing in it run, and garbage is an
  error when the protocol is built, before any sample is generated. torch-fidelity's own loader
  (``weights_only=False``) only ever sees bytes genbench re-serialised from those plain tensors.

Each is registered under a name that ends with its weights' sha256 prefix (``fmnist-cnn-1a2b3c4d``),
so numbers, cached reference features and TensorBoard tags never mix two sets of weights.

Channels: torch-fidelity's extractors take uint8 (N, 3, H, W). genbench.metrics repeats grey
images to 3 channels (R = G = B, as PIL's convert("RGB") does for a grey PNG) before any extractor
sees them: Inception then sees a grey photograph, and the CNN averages the channels back exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import urllib.error
import zipfile
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
        return {"kind": self.kind, "name": self.name, "sha256": self.sha256, "weights": shown_path(self.weights)}

    def create(self, layers: list[str]) -> FeatureExtractorBase:
        """The network, on the CPU in eval mode, returning `layers` (built by torch-fidelity's own
        create_feature_extractor from the registered name). Verifies the weights: one-line errors."""
        from torch_fidelity.utils import create_feature_extractor

        return create_feature_extractor(self.name, list(layers), cuda=False, verbose=False, **self.fidelity_kwargs)

    def default_layer(self, metric: str) -> str:
        """The feature layer torch-fidelity feeds `metric` (fid, isc, kid, prc) from this extractor."""
        return FEATURE_EXTRACTORS_REGISTRY[self.name].get_default_feature_layer_for_metric(metric)


def shown_path(path: str) -> str:
    """A shipped file as genbench/<path in the package> (the same on every machine); another file as it is.
    The sha256 beside it identifies the weights either way."""
    package = Path(__file__).resolve().parents[1]
    try:
        return str(Path("genbench") / Path(path).resolve().relative_to(package))
    except ValueError:
        return str(path)


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
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(cached), progress=False)  # a temporary file, then a rename
        except (OSError, urllib.error.URLError) as e:
            raise FileNotFoundError(
                f"eval.inception_weights is not set and {INCEPTION_FILE} could not be downloaded ({type(e).__name__}: "
                f"no network?); fetch {URL_INCEPTION_V3} elsewhere and pass eval.inception_weights=/path/to/{INCEPTION_FILE} "
                f"(or put it in {cached.parent})") from None
    return cached


def load_weights(path: str | Path, key: str = "eval.inception_weights", sha256_prefix: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict of plain tensors, read with torch.load(weights_only=True): a pickle that asks for
    anything else (code to run) is refused before any of it runs. With `sha256_prefix`, the bytes read
    must hash to it (the file did not change since its name was made). Every problem is one line naming `key`."""
    data = Path(path).read_bytes()
    if sha256_prefix and not hashlib.sha256(data).hexdigest().startswith(sha256_prefix):
        raise ValueError(f"{key}={path} changed while genbench was using it (its sha256 no longer starts with "
                         f"{sha256_prefix}); re-run the command")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        wanted = re.search(r"GLOBAL (\S+) was not an allowed global", str(e))
        what = f"it asks for {wanted.group(1)}, which would run code" if wanted else "it is not a torch state dict"
        raise ValueError(f"{key}={path} was refused by torch.load(weights_only=True) ({what}; nothing in it ran); "
                         f"pass {INCEPTION_FILE} from {URL_INCEPTION_V3}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ValueError(f"{key}={path} is truncated or not a weights file ({reason}); "
                         f"fetch {INCEPTION_FILE} again from {URL_INCEPTION_V3}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{key}={path} holds a {type(state).__name__}, not a state dict of tensors; "
                         f"pass {INCEPTION_FILE} from {URL_INCEPTION_V3}")
    return state


class SafeInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's Inception-v3 whose weights file is read with weights_only=True and matched key by
    key, shape by shape, against the network. torch-fidelity then loads a copy genbench serialised
    itself from those tensors (its torch.load uses weights_only=False), never the file's own pickle."""

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None, **kwargs):
        if feature_extractor_weights_path is None:
            raise ValueError(f"{name} needs its weights file: set eval.inception_weights=/path/to/{INCEPTION_FILE}")
        self._weights_path = str(feature_extractor_weights_path)
        buffer = io.BytesIO()
        suffix = name.rsplit("-", 1)[-1]  # registered as inception-v3-<sha256[:8]>
        prefix = suffix if re.fullmatch(r"[0-9a-f]{8}", suffix) else None
        torch.save(load_weights(self._weights_path, sha256_prefix=prefix), buffer)
        buffer.seek(0)
        super().__init__(name, features_list, feature_extractor_weights_path=buffer, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        expected = self.state_dict()
        # BatchNorm fills in its step counter itself: the official file (converted from TensorFlow) has none
        missing = sorted(k for k in expected.keys() - state_dict.keys() if not k.endswith(".num_batches_tracked"))
        unexpected = sorted(state_dict.keys() - expected.keys())
        wrong = sorted(k for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape)
        if missing or unexpected or wrong:
            problems = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in
                        ((missing, "missing"), (unexpected, "unexpected"), (wrong, "of the wrong shape")) if v]
            raise ValueError(f"eval.inception_weights={self._weights_path} does not hold torch-fidelity's Inception-v3 "
                             f"weights: {', '.join(problems)} keys; pass {INCEPTION_FILE} from {URL_INCEPTION_V3}")
        return super().load_state_dict(state_dict, strict, assign)


def _inception(path: str | None) -> Extractor:
    weights = inception_weights_path(path)
    sha = sha256_file(weights)
    name = f"inception-v3-{sha[:8]}"
    _register(name, SafeInceptionV3)
    return Extractor("inception-v3", name, sha, str(weights), {"feature_extractor_weights_path": str(weights)})
