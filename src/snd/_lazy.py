"""Import plumbing that keeps ``import snd`` light.

* :func:`lazy_exports` gives a package a module-level ``__getattr__`` that imports a submodule the first
  time one of its names is read (PEP 562), so ``snd.SnDModel`` still works without importing
  ``transformers.modeling_utils`` and the image-processing stack at ``import snd``.
* :func:`after_import` runs a callback once a named module has finished importing (at once if it
  already has). snd registers its models with ``AutoModel`` / ``AutoBackbone`` / ``AutoImageProcessor``
  this way: the registration needs the model classes, and it only matters once transformers' auto
  module that reads it is imported, which is the moment it happens.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import sys
import threading
from typing import Callable

logger = logging.getLogger(__name__)


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """A ``__getattr__`` for ``package`` that imports ``exports[name]`` (a module path relative to
    ``package``) and returns its attribute ``name``. Unknown names raise ``AttributeError``."""

    def __getattr__(name: str):
        if name not in exports:
            # a submodule not imported yet (``package.modeling_x`` as an attribute), as an eager __init__ allowed
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)  # later reads are plain attribute lookups
        return value

    return __getattr__


class _CallbackLoader(importlib.abc.Loader):
    """Delegates to the real loader, then runs the callbacks registered for the module."""

    def __init__(self, loader, callbacks: list[Callable[[], None]]) -> None:
        self.loader = loader
        self.callbacks = callbacks

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        _run(module.__name__, self.callbacks)

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the wrapped loader
        return getattr(self.loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a watched module it asks the other finders and wraps the loader."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[], None]]] = {}
        self.lock = threading.Lock()

    def find_spec(self, fullname, path, target=None):
        if _postponed:
            retry_postponed()
        with self.lock:
            if fullname not in self.callbacks:
                return None
            callbacks = self.callbacks.pop(fullname)
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CallbackLoader(spec.loader, callbacks)
                    return spec
                break
        with self.lock:  # not loadable by us: keep waiting
            self.callbacks.setdefault(fullname, []).extend(callbacks)
        return None


_finder = _PostImportFinder()


# Callbacks that met a circular import in progress: (the partially initialised module, the watched module, callback).
_postponed: list[tuple[str, str, Callable[[], None]]] = []
_retrying = threading.local()


def _initialising(module_name: str) -> bool:
    """True while ``module_name`` is in ``sys.modules`` but its body is still executing."""
    spec = getattr(sys.modules.get(module_name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run(name: str, callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except ImportError as error:
            # e.g. `from transformers import Dinov2Model`: transformers.modeling_layers imports the auto module (our
            # watched module) before it defines GradientCheckpointingLayer, which snd's model module imports. Not a
            # failure: run the callback again once that module has finished (the next import after it).
            blocker = getattr(error, "name", None)
            if blocker and _initialising(blocker):
                logger.debug("snd: callback after importing %s waits for %s to finish importing", name, blocker)
                with _finder.lock:
                    _postponed.append((blocker, name, callback))
                if _finder not in sys.meta_path:
                    sys.meta_path.insert(0, _finder)
            else:
                logger.warning("snd: callback after importing %s failed", name, exc_info=True)
        except Exception:  # a failed registration must not break the user's import of transformers
            logger.warning("snd: callback after importing %s failed", name, exc_info=True)


def retry_postponed() -> None:
    """Run the callbacks postponed by a circular import whose module has finished importing since (idempotent;
    called by the import hook on every later import, and by snd's own registration entry points)."""
    if getattr(_retrying, "active", False):
        return
    with _finder.lock:
        ready = [entry for entry in _postponed if not _initialising(entry[0])]
        for entry in ready:
            _postponed.remove(entry)
    if not ready:
        return
    _retrying.active = True
    try:
        for _, name, callback in ready:
            _run(name, [callback])
    finally:
        _retrying.active = False


def after_import(module_name: str, callback: Callable[[], None]) -> None:
    """Run ``callback()`` once ``module_name`` has been imported: now if it already is, else right after
    its module body finishes executing. Exceptions in the callback are logged, not raised."""
    if module_name in sys.modules:
        _run(module_name, [callback])
        return
    with _finder.lock:
        _finder.callbacks.setdefault(module_name, []).append(callback)
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)
