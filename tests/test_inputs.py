"""Issue #13's input cases: crafted pickles in the reference cache and the Inception weights (case 4),
corrupt images (case 7), and the evaluation inputs a user gets wrong (case 15), each one line naming
the input and the fix. Synthetic images and the shipped CNN only: every test runs in about a second."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genbench import data as gdata
from genbench.data import load_samples
from genbench.extractors import INCEPTION_FILE
from genbench.metrics import FidelityMetrics, images_sha256


class RunsCode:
    """Unpickled, this creates `marker`: the file appears if and only if the pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted_pickle(path: Path, marker: Path) -> Path:
    """A torch file whose pickle creates `marker` when loaded with weights_only=False. Checked live here:
    a test that says "nothing ran" must be one that would have seen it run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": RunsCode(marker)}, path)
    with open(path, "rb") as f:  # a file object: torch.load would hand a *.safetensors path to safetensors
        torch.load(f, weights_only=False)
    assert marker.exists(), "the payload must be live"
    marker.unlink()
    return path


def images(n: int, seed: int, channels: int = 1, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message, message
    return message


# ---- case 4: crafted pickles ----------------------------------------------------------------------
def test_crafted_pickle_in_the_reference_cache_never_runs(tmp_path: Path, caplog):
    cache, marker = tmp_path / "fidelity", tmp_path / "pwned"
    m = FidelityMetrics("fmnist-cnn", metrics=("fid", "kid"), kid_subset_size=20, cache_dir=str(cache))
    gen, ref, name = images(40, 0), images(40, 1), "fashion_mnist-train"
    # every file torch-fidelity would have unpickled when genbench handed it the cache (its own names) ...
    old_key = f"genbench-{name}-n{len(ref)}-{images_sha256(ref)[:16]}"
    old_files = [f"{old_key}-{m.extractor.name}-features-features.pt", f"{old_key}-{m.extractor.name}-features-logits.pt",
                 f"{old_key}-{m.extractor.name}-stat-fid-features.pt"]
    for f in old_files:
        crafted_pickle(cache / f, marker)
    # ... and the file genbench's own cache reads now
    crafted_pickle(m.cache_path(ref, name), marker)
    with caplog.at_level(logging.WARNING, logger="genbench"):
        result = m.compute(gen, ref, name)
    assert not marker.exists()
    assert "ignoring the cached features" in caplog.text
    assert result == FidelityMetrics("fmnist-cnn", metrics=("fid", "kid"), kid_subset_size=20, cache_dir=None).compute(gen, ref)
    assert m.compute(gen, ref, name) == result  # the rewritten cache is genbench's safetensors, and is used
    assert not marker.exists()


def test_torch_fidelity_itself_would_have_run_the_cache_payload(tmp_path: Path):
    """Why genbench owns its cache: the installed torch-fidelity, handed the same cache folder, runs the code."""
    from torch_fidelity import calculate_metrics

    from genbench.metrics import UInt8Images, to_rgb

    cache, marker = tmp_path / "fidelity", tmp_path / "pwned"
    m = FidelityMetrics("fmnist-cnn", metrics=("fid",), cache_dir=None)
    ref = images(10, 1)
    crafted_pickle(cache / f"ref-{m.extractor.name}-stat-fid-features.pt", marker)
    try:
        calculate_metrics(input1=UInt8Images(to_rgb(images(10, 0))), input2=UInt8Images(to_rgb(ref)), fid=True,
                          feature_extractor=m.extractor.name, cache_root=str(cache), input2_cache_name="ref", cuda=False,
                          verbose=False, save_cpu_ram=True)
    except Exception:  # the unpickled "statistics" are not statistics; the code already ran
        pass
    assert marker.exists()


def inception_state() -> dict[str, torch.Tensor]:
    """A state dict of the right keys and shapes for torch-fidelity's Inception-v3 (values: its initialisation),
    in the official file's format: a plain dict of tensors without BatchNorm's num_batches_tracked (what
    torch-fidelity's utils/util_convert_inception_weights.py writes)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def __init__(self):
            import io

            buffer = io.BytesIO()
            torch.save({}, buffer)
            buffer.seek(0)
            super().__init__("unloaded", ["2048"], feature_extractor_weights_path=buffer)

        def load_state_dict(self, *args, **kwargs):  # keep the initialisation
            return None

    return {k: v for k, v in Unloaded().state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    torch.save(inception_state(), path)
    return path


def test_inception_weights_load_safely_and_give_torch_fidelitys_features(inception_weights: Path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    m = FidelityMetrics("inception-v3", inception_weights=str(inception_weights), cache_dir=None)
    assert m.extractor.name.startswith("inception-v3-") and type(m.network).__name__ == "SafeInceptionV3"
    assert m.layers == {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"}
    x = images(1, 0, channels=3)
    plain = FeatureExtractorInceptionV3("plain", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(inception_weights))
    with torch.no_grad():
        theirs = plain.eval()(x)
    ours = m.featuresdict(x)
    assert torch.equal(ours["2048"], theirs[0]) and torch.equal(ours["logits_unbiased"], theirs[1])


def test_crafted_inception_weights_are_refused_and_never_run(tmp_path: Path, monkeypatch):
    marker = tmp_path / "pwned"
    weights = crafted_pickle(tmp_path / "inception.pth", marker)
    with pytest.raises(ValueError, match=r"eval.inception_weights=.*inception.pth was refused by torch.load\(weights_only=True\) "
                                         r"\(it asks for \S+, which would run code; nothing in it ran\)") as e:
        FidelityMetrics("inception-v3", inception_weights=str(weights))
    one_line(e)
    # the same file where torch.hub keeps its download: read the same way
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    crafted_pickle(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE, marker)
    with pytest.raises(ValueError, match=rf"hub/checkpoints/{INCEPTION_FILE} was refused"):
        FidelityMetrics("inception-v3")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "other keys", "other shapes"])
def test_garbage_inception_weights_fail_when_the_protocol_is_built(tmp_path: Path, inception_weights: Path, damage: str):
    """FidelityMetrics is built before any sample is generated (genbench.protocol), so garbage costs nothing."""
    path = tmp_path / "inception.pth"
    if damage == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "truncated":
        path.write_bytes(inception_weights.read_bytes()[: 1 << 20])
    elif damage == "other keys":
        torch.save({"fc.weight": torch.zeros(1008, 2048), "head.bias": torch.zeros(3)}, path)
    else:
        torch.save({k: v[..., :1] if v.dim() else v for k, v in inception_state().items()}, path)
    expected = {"random bytes": "was refused by torch.load", "truncated": "is truncated or not a weights file",
                "other keys": "does not hold torch-fidelity's Inception-v3 weights: .* missing .* 1 unexpected \\(e.g. head.bias\\)",
                "other shapes": "does not hold torch-fidelity's Inception-v3 weights: .* of the wrong shape"}[damage]
    with pytest.raises(ValueError, match=rf"eval.inception_weights={path}.*{expected}") as e:
        FidelityMetrics("inception-v3", inception_weights=str(path))
    assert INCEPTION_FILE in one_line(e)


# ---- case 7: corrupt images -----------------------------------------------------------------------
def write_pngs(folder: Path, n: int, size: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), 20 * i, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.mark.parametrize("corrupt", ["truncated", "text"])
def test_a_corrupt_image_is_named_in_one_line(tmp_path: Path, corrupt: str):
    bad = tmp_path / "imgs" / "sub" / "bad.png"
    write_pngs(bad.parent, 3)
    if corrupt == "truncated":
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(bad)
        bad.write_bytes(bad.read_bytes()[:200])
    else:
        bad.write_text("this is not an image")
    with pytest.raises(ValueError, match=rf"^data.root: {bad} is not a readable image \(.*\); delete or replace it") as e:
        gdata.image_folder(str(tmp_path / "imgs"), image_size=16, channels=1)  # data=image_folder
    one_line(e)
    with pytest.raises(ValueError, match=rf"^samples_dir: {bad} is not a readable image") as e:
        load_samples(bad.parent, channels=1)  # a samples folder: the same reader
    one_line(e)


# ---- case 15: evaluation inputs -------------------------------------------------------------------
@pytest.mark.parametrize("kind, scale, fix", [
    ("npy", "01", r"for images in \[0, 1\], save \(x \* 255\).round\(\).astype\(np.uint8\)"),
    ("npz", "pm1", r"for images in \[-1, 1\], save \(\(x \+ 1\) \* 127.5\).round\(\).astype\(np.uint8\)"),
])
def test_float_sample_arrays_are_refused_with_the_conversion(tmp_path: Path, kind: str, scale: str, fix: str):
    """Decision: floats are refused, not guessed (a [-1, 1] set with few dark pixels looks like [0, 1], and
    tools round differently); the error prints the exact conversion for the range it found."""
    x = images(6, 0).numpy().astype(np.float32) / 255
    x = x if scale == "01" else x * 2 - 1
    path = tmp_path / f"samples.{kind}"
    np.save(path, x) if kind == "npy" else np.savez(path, images=x)
    with pytest.raises(ValueError, match=rf"samples_dir: {path}: images are float32 in \[.*\], but genbench scores uint8 "
                                         rf"images and does not guess a float range; {fix}") as e:
        load_samples(path, channels=1)
    one_line(e)
    converted = (x * 255).round() if scale == "01" else (x + 1) * 127.5
    np.save(path, converted.round().astype(np.uint8)) if kind == "npy" else np.savez(path, images=converted.round().astype(np.uint8))
    assert torch.equal(load_samples(path, channels=1), images(6, 0))  # the printed fix gives back the images


def test_npz_without_images_names_the_arrays_it_has(tmp_path: Path):
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=images(3, 0).numpy(), labels=np.arange(3))
    with pytest.raises(ValueError, match=r"holds no `images` array \(it has: arr_0, labels\); save the samples with "
                                         r"np.savez\(path, images=") as e:
        load_samples(path, channels=1)
    one_line(e)


def test_pickled_object_arrays_are_refused_and_never_run(tmp_path: Path):
    marker, path = tmp_path / "pwned", tmp_path / "samples.npy"
    np.save(path, np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"is not a readable .npz/.npy file of images \(Object arrays cannot be loaded"):
        load_samples(path, channels=1)
    assert not marker.exists()


def test_sample_arrays_in_either_layout_and_any_integer_type(tmp_path: Path):
    x = images(4, 0, channels=3)
    np.savez(tmp_path / "nhwc.npz", images=x.permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "int64.npy", x.numpy().astype(np.int64))
    assert torch.equal(load_samples(tmp_path / "nhwc.npz", channels=3), x)
    assert torch.equal(load_samples(tmp_path / "int64.npy", channels=3), x)
    np.save(tmp_path / "wide.npy", x.numpy().astype(np.int32) * 257)
    with pytest.raises(ValueError, match=r"not 8-bit; scale them to \[0, 255\] \(16-bit: \(x / 257\).round\(\)\)"):
        load_samples(tmp_path / "wide.npy", channels=3)


def test_empty_samples_folder_and_empty_data_root(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"samples_dir=.*empty holds no images \(.*\.png.*\); pass the folder "
                                                r"`genbench sample` wrote") as e:
        load_samples(tmp_path / "empty", channels=1)
    one_line(e)
    with pytest.raises(FileNotFoundError, match=r"samples_dir=.*missing is not a folder or an .npz/.npy file"):
        load_samples(tmp_path / "missing", channels=1)
    with pytest.raises(gdata.DatasetNotFound, match=r"data.root=.*empty holds no images"):
        gdata.image_folder(str(tmp_path / "empty"))


def test_image_folder_without_root_is_one_line():
    with pytest.raises(ValueError, match=r"data=image_folder needs data.root=DIR") as e:
        gdata.image_folder(None)
    one_line(e)


def test_fewer_samples_than_kid_subset_size():
    m = FidelityMetrics("fmnist-cnn", metrics=("fid", "kid"), kid_subset_size=50, cache_dir=None)
    with pytest.raises(ValueError, match=r"eval.metrics.kid_subset_size=50 exceeds the 20 generated / 60 reference images; "
                                         r"lower eval.metrics.kid_subset_size or raise eval.num_samples") as e:
        m.compute(images(20, 0), images(60, 1))
    one_line(e)
    with pytest.raises(ValueError, match=r"eval.metrics.prc_neighborhood=3 needs more than that many images"):
        FidelityMetrics("fmnist-cnn", metrics=("prc",), cache_dir=None).compute(images(3, 0), images(60, 1))


def test_16_bit_pngs_are_scaled_to_8_bits_not_saturated(tmp_path: Path):
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 65536, (3, 20, 20), dtype=np.uint16)
    for folder in ("16", "8"):
        (tmp_path / folder).mkdir()
    for i, img in enumerate(wide):
        Image.fromarray(img).save(tmp_path / "16" / f"{i}.png")  # mode I;16
        Image.fromarray(np.round(img / 257).astype(np.uint8)).save(tmp_path / "8" / f"{i}.png")
    assert Image.open(tmp_path / "16" / "0.png").mode == "I;16"
    expected = torch.from_numpy(np.round(wide / 257).astype(np.uint8))[:, None]
    grey = load_samples(tmp_path / "16", channels=1)
    assert torch.equal(grey, expected) and torch.equal(grey, load_samples(tmp_path / "8", channels=1))
    assert (grey == 255).float().mean() < 0.01  # convert("L") alone saturated almost every pixel
    rgb = gdata.image_folder(str(tmp_path / "16"), image_size=20, channels=3)
    assert torch.equal(rgb.train, expected.expand(-1, 3, -1, -1))
    Image.fromarray(wide[0].astype(np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match=r"float.tif has floating-point pixels, whose range is unknown; save it as an 8- or 16-bit PNG"):
        gdata.read_image(tmp_path / "float.tif", channels=1)


def test_image_folder_without_root_is_one_line_before_any_work(tmp_path: Path, capsys):
    from genbench.cli import main

    try:
        code = main(["train", "data=image_folder", f"hydra.run.dir={tmp_path / 'r'}"])
    except SystemExit as e:  # refused inside the Hydra app rather than by the command-line check
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "data.root" in err, err
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_broken_cache_file_is_rebuilt_and_a_failed_cache_write_costs_nothing(tmp_path: Path, monkeypatch, caplog):
    import genbench.atomic

    m = FidelityMetrics("fmnist-cnn", metrics=("fid",), cache_dir=str(tmp_path))
    gen, ref, name = images(30, 0), images(30, 1), "ref"
    expected = m.compute(gen, ref, name)
    path = m.cache_path(ref, name)
    path.write_bytes(path.read_bytes()[:100])  # a truncated cache file (a killed copy, a full disk elsewhere)
    with caplog.at_level(logging.WARNING, logger="genbench"):
        assert m.compute(gen, ref, name) == expected
    assert "ignoring the cached features" in caplog.text and m._read_cache(path, ref) is not None  # rewritten whole
    path.unlink()

    def disk_full(path, write):
        raise genbench.atomic.WriteError(28, f"could not write {path}: No space left on device")

    monkeypatch.setattr(genbench.atomic, "atomic_write", disk_full)
    with caplog.at_level(logging.WARNING, logger="genbench"):
        assert m.compute(gen, ref, name) == expected
    assert "could not cache the reference features" in caplog.text and not path.exists()
