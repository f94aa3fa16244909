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
import math
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


class _StorageType:
    """A storage class named in a pickle, usable only as the dtype tag of a persistent id: calling it (a pickle
    asking ``torch.UntypedStorage(2**40)``) is refused instead of allocating."""

    def __init__(self, name: str):
        self.name = name
        kind = getattr(torch, name, None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation
            dtype = getattr(kind, "dtype", torch.uint8) if isinstance(kind, type) and name != "UntypedStorage" else torch.uint8
        self.dtype = dtype if isinstance(dtype, torch.dtype) else torch.uint8

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"the pickle calls torch.{self.name}{args!r}: it would allocate storage; refused")


def _storage_type(module: str, name: str):
    if module in ("torch", "torch.storage", "torch.cuda") and name.endswith("Storage"):
        return _StorageType(name)
    return None


class _InertUnpickler(pickle.Unpickler):
    # The only callables taken from torch: the tensor rebuilders that torch.save emits.
    _TORCH_FUNCTIONS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module, name):
        if (module, name) in self._TORCH_FUNCTIONS:
            return getattr(torch._utils, name)
        storage = _storage_type(module, name)
        if storage is not None:
            return storage
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
            dtype = storage_type.dtype if isinstance(storage_type, (type, _StorageType)) else storage_type
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self.storages[key]


class _StorageRecord:
    """A storage in the size dry run: its dtype and how many elements the archive really holds."""

    def __init__(self, dtype: torch.dtype, available: int):
        self.dtype, self.available = dtype, available


class _TensorRecord:
    """A tensor in the size dry run. A pickle can re-shape a tensor after building it: a BUILD opcode on a
    tensor makes ``torch.load(weights_only=True)`` call ``tensor.set_(storage, offset, size, stride)`` (and on a
    Parameter ``__setstate__``, the same); that state is checked like the tensor's own size fields."""

    def __init__(self, check):
        self._check = check

    def __setstate__(self, state):
        if isinstance(state, dict) or state is None:
            return  # attributes (a subclass's __dict__): no size
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            return  # (dict, slots) state
        if not isinstance(state, tuple) or not state:
            raise pickle.UnpicklingError(f"a tensor's BUILD state is {type(state).__name__}, not a tensor state")
        source = state[0]
        if isinstance(source, _TensorRecord):
            return  # set_(another tensor): that one was checked
        if isinstance(source, _StorageRecord):
            offset = state[1] if len(state) > 1 else 0
            size = state[2] if len(state) > 2 else (source.available,)
            if len(state) > 3:
                stride = state[3]
            else:  # contiguous
                stride, step = [], 1
                for extent in reversed(tuple(size)):
                    stride.insert(0, step)
                    step *= extent if isinstance(extent, int) else 1
            if not isinstance(size, (tuple, list, torch.Size)) or not isinstance(stride, (tuple, list, torch.Size)):
                raise pickle.UnpicklingError(f"a tensor's BUILD state sets size {size!r} / stride {stride!r}, not integer lists")
            self._check(source, offset, tuple(size), tuple(stride), "a tensor re-shaped by a BUILD (set_) step")
            return
        raise pickle.UnpicklingError(f"a tensor's BUILD state starts with {type(source).__name__}, not a storage or tensor")


class _SizeCheckUnpickler(pickle.Unpickler):
    """A dry run over ``data.pkl`` that allocates nothing: storages are (dtype, bytes in the archive) records,
    tensors are checked against them and against the file size, also after a BUILD step re-shapes them
    (``tensor.set_``), every other object is inert. Raises ``pickle.UnpicklingError`` naming the problem (a size
    field larger than the file, a negative size, a view past its storage, a pickle that calls a storage
    constructor)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, file_size: int):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.file_size = archive, prefix, file_size

    def find_class(self, module, name):
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v3")):
            return self._rebuild_tensor
        if (module, name) in (("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state")):
            return lambda data, *args, **kwargs: data
        if (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):  # func(*args), then attributes
            return lambda func, new_type, args, state: func(*args) if callable(func) else _placeholder("torch", "Tensor")()
        storage = _storage_type(module, name)
        if storage is not None:
            return storage
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return _placeholder(module, name)

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else storage_type
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"storage {key!r}: unknown storage type {storage_type!r}")
        itemsize = torch.empty(0, dtype=dtype).element_size()
        try:
            stored = self.archive.getinfo(f"{self.prefix}/data/{key}").file_size
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key!r} is missing from the archive") from None
        if stored > self.file_size:
            raise pickle.UnpicklingError(f"storage {key!r} claims {stored} bytes, more than the whole file ({self.file_size} bytes)")
        if not isinstance(numel, int) or numel < 0 or numel * itemsize > self.file_size:
            raise pickle.UnpicklingError(f"storage {key!r} claims {numel!r} elements of {dtype}, more than the file holds ({self.file_size} bytes)")
        return _StorageRecord(dtype, stored // itemsize)

    def _check_view(self, storage, offset, size, stride, what: str = "a tensor") -> None:
        if not isinstance(storage, _StorageRecord):
            raise pickle.UnpicklingError(f"a tensor is built on {type(storage).__name__}, not a storage")
        dtype, available = storage.dtype, storage.available
        values = (offset, *size, *stride)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or any(v < 0 for v in values) or len(size) != len(stride):
            raise pickle.UnpicklingError(f"{what} has a negative or non-integer size/stride/offset: size {size}, stride {stride}, offset {offset}")
        numel = math.prod(size)
        nbytes = numel * torch.empty(0, dtype=dtype).element_size()
        if nbytes > self.file_size:
            raise pickle.UnpicklingError(
                f"{what} of shape {tuple(size)} ({dtype}, {nbytes} bytes) is larger than the whole file ({self.file_size} bytes) "
                f"(stride {tuple(stride)}): its size fields are corrupt or it is a broadcast view; refused before allocating"
            )
        if numel and offset + sum((n - 1) * st for n, st in zip(size, stride)) >= available:
            raise pickle.UnpicklingError(f"{what} of shape {tuple(size)} at offset {offset} reads past its storage of {available} elements")

    def _rebuild_tensor(self, storage, offset, size, stride, *args, **kwargs):
        if not isinstance(size, (tuple, list, torch.Size)) or not isinstance(stride, (tuple, list, torch.Size)):
            raise pickle.UnpicklingError(f"a tensor has size {size!r} / stride {stride!r}, not integer lists")
        self._check_view(storage, offset, tuple(size), tuple(stride))
        return _TensorRecord(self._check_view)


def check_sizes(path: str | Path) -> None:
    """Dry-run the pickle of zip-format torch checkpoint ``path``, refusing size fields larger than the file
    before anything is allocated (see ``_SizeCheckUnpickler``). Non-zip (legacy) files are left to torch."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(names) != 1:
            raise pickle.UnpicklingError(f"{path}: not a zip-format torch checkpoint (found {len(names)} data.pkl)")
        info = archive.getinfo(names[0])
        size = path.stat().st_size
        if info.file_size > size:
            raise pickle.UnpicklingError(f"{path}: data.pkl claims {info.file_size} bytes, more than the file ({size} bytes)")
        prefix = names[0][: -len("/data.pkl")]
        try:
            _SizeCheckUnpickler(archive.read(names[0]), archive, prefix, size).load()
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{path}: {error}") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise pickle.UnpicklingError(f"{path}: corrupt pickle ({type(error).__name__}: {error})") from None


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

    Raises the weights-only error when the file is not a zip-format checkpoint either. Size fields are
    checked against the file size first (``check_sizes``), so a small file cannot ask for terabytes.
    """
    check_sizes(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as weights_only_error:
        try:
            return load_without_code(path)
        except (zipfile.BadZipFile, pickle.UnpicklingError):
            raise weights_only_error from None
