"""Errors that mean "the thing you named is not there", shared by the scripts so that each ends as one line."""

from __future__ import annotations

from pathlib import Path


class SourceNotFoundError(FileNotFoundError):
    """A file, folder or Hub repository a command or configuration names cannot be found (no such path, a mistyped
    Hub id, or offline without a cached copy); the message names the field and the value, on one line."""


def looks_like_local_path(source: str) -> bool:
    """Whether ``source`` can only be a local path (never a Hub id ``owner/name``)."""
    return source.startswith(("/", "./", "../", "~")) or "\\" in source or source.count("/") > 1


def require_hub_id(source: str, field: str) -> None:
    """A source that is not a local path must look like a Hub id; a missing local path says so (not "Repo id must
    be ...")."""
    if looks_like_local_path(source):
        raise SourceNotFoundError(f"{field}={source!r}: no such file or directory (and not a Hub id 'owner/name')")


def hub_unavailable(source: str, field: str, error: BaseException) -> SourceNotFoundError:
    """The one-line error for a Hub id the Hub could not provide (offline without a cached copy, no such repository,
    no network)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        reason = "offline (HF_HUB_OFFLINE=1) and not in the Hugging Face cache; run once online, or give a local folder"
    else:
        reason = "the Hub could not provide it: " + (str(error).strip().splitlines() or [type(error).__name__])[0]
    return SourceNotFoundError(f"{field}={source!r}: not a local file or folder, and {reason}")


def load_from_hub(source: str, field: str, load):
    """``load()`` of the Hub id ``source``; what the Hub cannot provide becomes one ``SourceNotFoundError`` line."""
    from huggingface_hub.errors import HFValidationError

    try:
        return load()
    except (OSError, HFValidationError) as error:
        raise hub_unavailable(source, field, error) from error


def check_model_source(source: str, field: str) -> None:
    """Fail early, in one line, on a model source that cannot load: a missing local path, a folder without
    ``config.json``, or (offline) a Hub id with no cached ``config.json``. A file is left to its converter."""
    path = Path(source)
    if path.is_file():
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SourceNotFoundError(f"{field}={source!r}: folder has no config.json (expected a save_pretrained folder)")
        return
    require_hub_id(source, field)
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(source, "config.json"), str):
        raise hub_unavailable(source, field, FileNotFoundError(source))


__all__ = ["SourceNotFoundError", "check_model_source", "hub_unavailable", "load_from_hub", "looks_like_local_path", "require_hub_id"]
