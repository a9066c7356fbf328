"""The metrics adapter (genbench.metrics) and the feature extractors (genbench.extractors).

Agreement with torch-fidelity's own `fidelity` command, closed-form cases (a set against itself),
batch-size independence, the reference cache and the one-line errors. Small subsets, on CPU.
"""

from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbench import data as gdata
from genbench.extractors import INCEPTION_FILE, cnn_paths, resolve_extractor, sha256_file
from genbench.metrics import FidelityMetrics, to_rgb

N = 300  # images per side in the metric tests


@pytest.fixture(scope="module")
def fmnist() -> gdata.ImageData:
    try:
        return gdata.fashion_mnist()
    except gdata.DatasetNotFound as e:
        pytest.skip(str(e))


def cnn_metrics(**kwargs) -> FidelityMetrics:
    return FidelityMetrics("fmnist-cnn", **{"cache_dir": None, "kid_subset_size": 100, **kwargs})


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return folder


def fidelity_cli(monkeypatch, capsys, *args: str) -> dict:
    """torch-fidelity's own `fidelity` command line (its main(), run here so that it sees genbench's
    registered extractors), printing JSON."""
    from torch_fidelity.fidelity import main

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["fidelity", *args, "--json", "--cpu", "--silent", "--save-cpu-ram"])
    main()
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


# ---- the shipped CNN ---------------------------------------------------------------------------
def test_cnn_weights_are_small_recorded_and_named_by_hash():
    weights, meta = cnn_paths("fmnist-cnn")
    assert weights.stat().st_size < 5e6
    recorded = json.loads(meta.read_text())
    assert recorded["sha256"] == sha256_file(weights)
    extractor = resolve_extractor("fmnist-cnn")
    assert extractor.name == f"fmnist-cnn-{recorded['sha256'][:8]}" and extractor.sha256 == recorded["sha256"]


@pytest.mark.slow  # 10,000 test images through the CNN: the shipped weights' sha256 is checked in the fast suite
def test_cnn_accuracy_on_the_test_split(fmnist):
    from genbench.extractors import load_cnn
    from genbench.extractors.cnn import prepare

    labels_file = gdata.DEBIAN_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz"
    if not labels_file.is_file():
        pytest.skip(f"{labels_file} not installed")
    labels = torch.from_numpy(gdata.read_idx(labels_file).astype(np.int64))
    net = load_cnn(cnn_paths("fmnist-cnn")[0])
    with torch.no_grad():
        predicted = torch.cat([net(prepare(x))[1].argmax(1) for x in fmnist.test.split(1000)])
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy >= 0.90, accuracy


def test_cnn_reads_grey_as_one_or_three_channels(fmnist):
    """Explicit channel handling: grey repeated to R = G = B scores exactly like the 1-channel tensor."""
    x = fmnist.test[:50]
    assert torch.equal(to_rgb(x)[:, 0], to_rgb(x)[:, 2]) and to_rgb(x).shape[1] == 3
    m = cnn_metrics(metrics=("fid",))
    assert m.compute(x, fmnist.train[:50]) == m.compute(to_rgb(x), to_rgb(fmnist.train[:50]))


# ---- the numbers -------------------------------------------------------------------------------
def test_a_set_against_itself_scores_zero_distance(fmnist):
    r = cnn_metrics().compute(fmnist.test[:N], fmnist.test[:N])
    assert abs(r["fid"]) < 1e-3
    assert r["precision"] == 1.0 and r["recall"] == 1.0
    assert 1.0 < r["is_mean"] <= 10.0  # 10 classes bound the Inception Score


def test_train_against_test_is_small_and_positive(fmnist):
    m = cnn_metrics(metrics=("fid", "kid"))
    near = m.compute(fmnist.train[:N], fmnist.test[:N])
    g = torch.Generator().manual_seed(0)
    scrambled = fmnist.test[:N].flatten(1)[:, torch.randperm(32 * 32, generator=g)].view(-1, 1, 32, 32)
    far = m.compute(scrambled, fmnist.test[:N])
    assert 0 < near["fid"] < 0.1 * far["fid"], (near, far)
    assert abs(near["kid_mean"]) < 0.1 * far["kid_mean"], (near, far)


def test_batch_size_does_not_change_the_numbers(fmnist):
    a = cnn_metrics(batch_size=23).compute(fmnist.train[:N], fmnist.test[:N])
    b = cnn_metrics(batch_size=300).compute(fmnist.train[:N], fmnist.test[:N])
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_fid_equals_the_fidelity_command_on_png_folders(fmnist, tmp_path, monkeypatch, capsys):
    gen, ref = fmnist.train[:200], fmnist.test[:200]
    ours = cnn_metrics(metrics=("fid", "kid")).compute(gen, ref)
    name = resolve_extractor("fmnist-cnn").name
    theirs = fidelity_cli(monkeypatch, capsys, "--input1", str(write_pngs(gen, tmp_path / "gen")),
                          "--input2", str(write_pngs(ref, tmp_path / "ref")), "--fid", "--kid", "--kid-subset-size", "100", "--feature-extractor", name, "--no-cache")
    assert abs(ours["fid"] - theirs["frechet_inception_distance"]) < 1e-3
    assert abs(ours["kid_mean"] - theirs["kernel_inception_distance_mean"]) < 1e-5


def test_numbers_equal_calculate_metrics_exactly(fmnist):
    """genbench scores from feature dicts with torch-fidelity's metric functions; torch-fidelity's own
    calculate_metrics (what genbench called before it owned the cache) gives the very same floats."""
    from torch_fidelity import calculate_metrics

    from genbench.metrics import RESULT_NAMES, UInt8Images

    gen, ref = fmnist.train[:N], fmnist.test[:N]
    for metrics in (("fid",), ("fid", "isc", "kid", "prc")):
        m = cnn_metrics(metrics=metrics)
        theirs = calculate_metrics(
            input1=UInt8Images(to_rgb(gen)), input2=UInt8Images(to_rgb(ref)), feature_extractor=m.extractor.name,
            **{k: True for k in metrics}, cuda=False, batch_size=m.batch_size, isc_splits=m.isc_splits,
            kid_subsets=m.kid_subsets, kid_subset_size=m.kid_subset_size, prc_neighborhood=m.prc_neighborhood,
            save_cpu_ram=True, verbose=False, cache=False)
        assert m.compute(gen, ref) == {RESULT_NAMES[k]: float(v) for k, v in theirs.items()}


def test_reference_cache_is_reused_and_invalidated_by_new_data(fmnist, tmp_path):
    cache, name = tmp_path / "cache", "fashion_mnist-test"
    m = cnn_metrics(metrics=("fid", "kid"), cache_dir=str(cache))
    gen, ref = fmnist.train[:N], fmnist.test[:N].clone()
    first = m.compute(gen, ref, name)
    filled = m.cache_fill_s  # the seconds the miss cost (the unnamed generated set is never counted)
    files = list(cache.iterdir())
    assert files == [m.cache_path(ref, name)] and files[0].suffix == ".safetensors" and m.extractor.name in files[0].name
    assert first == cnn_metrics(metrics=("fid", "kid")).compute(gen, ref)  # caching changes no number
    mtime = files[0].stat().st_mtime_ns
    assert m.compute(gen, ref, name) == first and files[0].stat().st_mtime_ns == mtime  # a hit: nothing rewritten
    assert filled > 0 and m.cache_fill_s == filled  # a hit costs no fill time
    # the hit really serves the file: features of other images stored under this key change the numbers
    other = fmnist.test[N : 2 * N]
    m._write_cache(files[0], ref, m.featuresdict(other))
    assert m.compute(gen, ref, name) == m.compute(gen, other)
    # other settings of the same extractor (the smaller during-training KID) share the file
    assert cnn_metrics(metrics=("isc",), kid_subset_size=50, cache_dir=str(cache)).cache_path(ref, name) == files[0]
    ref[0, 0, 10:20, 10:20] = 255  # the data changes: a new key, new features
    changed = m.compute(gen, ref, name)
    assert len(list(cache.iterdir())) == 2 and changed["fid"] != first["fid"]
    assert m.reference_key(ref, name) != m.reference_key(fmnist.test[:N], name)


def test_features_api(fmnist):
    """What the protocol's memorisation check uses: (N, D) features at a metric's layer, from the same network."""
    m = cnn_metrics()
    x = fmnist.test[:20]
    assert m.features(x).shape == (20, 128) and m.features(x, metric="isc").shape == (20, 10)
    assert torch.equal(m.features(x), m.featuresdict(x)[m.layers["fid"]])
    # a smaller batch: equal to float32 rounding (oneDNN picks its kernels by batch size on some CPUs, e.g. Xeon)
    torch.testing.assert_close(m.features(x[:5]), m.features(x)[:5], rtol=1e-5, atol=1e-5)


# ---- errors ------------------------------------------------------------------------------------
def test_float_images_are_refused(fmnist):
    with pytest.raises(ValueError, match="uint8.*to_uint8"):
        cnn_metrics().compute(gdata.to_float(fmnist.test[:N]), fmnist.test[:N])


def test_too_few_images_for_kid_subset_size(fmnist):
    with pytest.raises(ValueError, match=r"eval.metrics.kid_subset_size=100 exceeds the 50 generated"):
        cnn_metrics().compute(fmnist.test[:50], fmnist.test[:N])


def test_unknown_extractor():
    with pytest.raises(ValueError, match="eval.extractor='resnet' is not one of: fmnist-cnn, mnist-cnn, inception-v3"):
        FidelityMetrics("resnet")


def test_missing_inception_weights_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached copy

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # torch.hub's own download code runs and meets no network
    with pytest.raises(FileNotFoundError, match=rf"eval.inception_weights is not set and {INCEPTION_FILE} could not be "
                                                rf"downloaded.*pass eval.inception_weights=/path/to/{INCEPTION_FILE}") as e:
        FidelityMetrics("inception-v3")
    assert "\n" not in str(e.value) and "no network" in str(e.value)
    with pytest.raises(FileNotFoundError, match=r"eval.inception_weights=/nowhere.pth is not a file"):
        FidelityMetrics("inception-v3", inception_weights="/nowhere.pth")


# ---- Inception-v3, wired with weights made here (never downloaded) -------------------------------
def random_inception_weights(path: Path) -> Path:
    """A randomly initialised state dict of torch-fidelity's Inception-v3 (He-normal convolutions, so the
    2048-d features neither vanish nor explode), saved where eval.inception_weights can point."""
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    torch.save({}, path.with_suffix(".empty"))
    torch.manual_seed(0)
    net = Unloaded("random", ["2048"], feature_extractor_weights_path=str(path.with_suffix(".empty")))
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.slow  # Inception-v3 at 299x299 on the CPU; its weights' safe loading is tested fast in test_inputs.py
def test_inception_with_local_weights_matches_the_fidelity_command(fmnist, tmp_path, monkeypatch, capsys):
    weights = random_inception_weights(tmp_path / "inception.pth")
    m = FidelityMetrics("inception-v3", inception_weights=str(weights), metrics=("fid", "isc"), isc_splits=2,
                        batch_size=8, cache_dir=None)
    assert m.extractor.name == f"inception-v3-{sha256_file(weights)[:8]}"
    gen, ref = fmnist.train[:5], fmnist.test[:5]  # grey: repeated to 3 channels by the adapter
    ours = m.compute(gen, ref)
    assert np.isfinite(list(ours.values())).all() and ours["fid"] > 0
    theirs = fidelity_cli(monkeypatch, capsys, "--input1", str(write_pngs(gen, tmp_path / "gen")),
                          "--input2", str(write_pngs(ref, tmp_path / "ref")), "--fid", "--feature-extractor", "inception-v3-compat", "--feature-extractor-weights-path", str(weights),
                          "--no-cache", "--batch-size", "8")
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4, abs=1e-3)
