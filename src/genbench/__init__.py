"""genbench: GANs, VAEs and diffusion models benchmarked side by side under one protocol."""

from pathlib import Path

__version__ = "0.1.0"


def _find_conf() -> Path:
    """conf/ ships inside the wheel as genbench/conf; in a source checkout it is <repo>/conf."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"genbench's conf/ folder is missing (looked in {here / 'conf'} and {here.parents[1] / 'conf'})")


CONF_DIR = str(_find_conf())
