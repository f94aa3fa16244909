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


def _run(name: str, callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a failed registration must not break the user's import of transformers
            logger.warning("snd: callback after importing %s failed", name, exc_info=True)


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
