"""Read torch checkpoints without running any code from them.

`torch.load(..., weights_only=True)` is the first choice. Some real checkpoints (Lightning `.ckpt` files with
saved hyper-parameter objects, training checkpoints with an argparse `Namespace`) also pickle objects that the
weights-only loader refuses. For those, `load_without_code` reads the same zip archive with an unpickler that
rebuilds tensors and plain containers and turns every other class or function the file names into an inert
placeholder: nothing named in the file is imported or called, so a malicious `__reduce__` does nothing.
"""

from __future__ import annotations

import collections
import io
import pickle
import warnings
import zipfile
from pathlib import Path

import torch


class InertObject:
    """Stands in for any class or function a checkpoint names: accepts any arguments and state, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return InertObject()


def _placeholder(module: str, name: str) -> type:
    return type(name, (InertObject,), {"__module__": f"inert.{module}"})


class _InertUnpickler(pickle.Unpickler):
    # The only callables taken from torch: the tensor rebuilders and storage types that torch.save emits.
    _TORCH_FUNCTIONS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module, name):
        if (module, name) in self._TORCH_FUNCTIONS:
            return getattr(torch._utils, name)
        if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
            return getattr(torch, name)
        if (module, name) == ("torch", "Size"):
            return torch.Size
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return _placeholder(module, name)

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if key not in self.storages:  # views of one storage share it, as with torch.load
            data = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
            untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
            dtype = storage_type.dtype if isinstance(storage_type, type) else storage_type
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


def load_without_code(path: str | Path):
    """Unpickle a zip-format torch checkpoint with tensors rebuilt and every other object inert."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(names) != 1:
            raise pickle.UnpicklingError(f"{path}: not a zip-format torch checkpoint (found {len(names)} data.pkl)")
        prefix = names[0][: -len("/data.pkl")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation: internal use only
            return _InertUnpickler(archive.read(names[0]), archive, prefix).load()


def load_checkpoint_safely(path: str | Path):
    """`torch.load(weights_only=True)`; if it refuses other pickled objects, `load_without_code` instead.

    Raises the weights-only error when the file is not a zip-format checkpoint either.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as weights_only_error:
        try:
            return load_without_code(path)
        except (zipfile.BadZipFile, pickle.UnpicklingError):
            raise weights_only_error from None
