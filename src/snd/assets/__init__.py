"""Model folders shipped inside the package (package data), loadable offline.

``snd.assets.path("nano-2d")`` is the folder of the 2D-pretrained nano ViT (``AutoModel.from_pretrained`` it after
``import snd``); ``snd.assets.names()`` lists what is shipped. Configs accept the bare name wherever they take a
model folder (``--model.pretrained nano-2d``), as long as no local folder of that name exists.
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent


def names() -> list[str]:
    """Names of the shipped model folders (those holding a ``config.json``)."""
    return sorted(child.name for child in _ROOT.iterdir() if child.is_dir() and (child / "config.json").is_file())


def path(name: str) -> Path:
    """The folder of shipped model ``name``; a clear error listing the shipped names otherwise."""
    folder = _ROOT / name
    if name in names():
        return folder
    raise FileNotFoundError(f"snd ships no model named {name!r}; shipped: {names() or 'none'}")


def resolve(source: str | None) -> str | None:
    """``source`` unchanged, unless it is the bare name of a shipped model and no local path of that name exists:
    then that model's folder."""
    if source is None or Path(source).exists() or source not in names():
        return source
    return str(path(source))


__all__ = ["names", "path", "resolve"]
