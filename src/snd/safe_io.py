"""Reading small metadata files (YAML configs, JSON metadata) without hanging or running out of memory, with
errors that name the file and what was expected.

* only regular files are opened: a named pipe (FIFO) would block ``open()``/``read()`` forever, a device
  such as ``/dev/zero`` would read without end (:func:`require_regular_file`);
* text is read up to a size bound and decoded as strict UTF-8 (:func:`read_text`);
* JSON nested deeper than the parser can follow is refused with the file's name (:func:`load_json`);
* YAML aliases are bounded: a "billion laughs" document (anchors referencing anchors, each alias doubling the
  expanded size) loads cheaply as shared references but expands without bound as soon as anything copies or
  dumps it, so the expanded node count is checked after loading (:func:`load_yaml`);
* images are opened only from regular files, decompression bombs are named, and 16-bit images are scaled to
  8 bits instead of clipped (:func:`open_image_file`, :func:`to_rgb`);
* a ``.npy`` header's shape x dtype is checked against the file size before anything is allocated
  (:func:`check_npy_size`).

Each function takes ``error``, the exception class to raise (a ``ConfigError``, ``SceneDataError``...; it is
called with the message only).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

__all__ = [
    "MAX_TEXT_BYTES", "MAX_YAML_NODES", "check_npy_size", "count_nodes", "load_json", "load_yaml", "open_image_file", "read_text",
    "require_regular_file", "to_rgb",
]

#: Largest metadata file read as text (a transforms.json of 100,000 frames is ~60 MB).
MAX_TEXT_BYTES = 256 * 2**20
#: Largest number of nodes a YAML document may expand to, aliases counted at every use (a full training
#: config has a few hundred).
MAX_YAML_NODES = 100_000


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def require_regular_file(path: str | Path, *, what: str = "file", error=ValueError) -> Path:
    """``path`` when it is a regular file (symlinks followed); else ``error`` naming the path and what it is.

    A missing file raises ``FileNotFoundError``. Nothing is opened: opening a FIFO blocks until a writer appears.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (expected {what})") from None
    except OSError as exc:
        raise error(f"{path}: cannot stat ({exc.strerror or exc}); expected {what}") from None
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is {_kind(mode)}, not a regular file; expected {what}")
    return path


def read_text(path: str | Path, *, what: str = "a UTF-8 text file", error=ValueError, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The file's text: a regular file of at most ``max_bytes``, decoded as strict UTF-8 (BOM allowed)."""
    path = require_regular_file(path, what=what, error=error)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size} bytes, more than the {max_bytes} allowed for {what}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc}); expected {what}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: more than the {max_bytes} bytes allowed for {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); expected {what}") from None


def load_json(path: str | Path, *, what: str = "a JSON file", error=ValueError, max_bytes: int = MAX_TEXT_BYTES):
    """Parse a JSON file, naming the file for non-UTF-8 text, syntax errors and nesting too deep to parse."""
    text = read_text(path, what=what, error=error, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to parse; expected {what}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); expected {what}") from None


def count_nodes(value, limit: int) -> int:
    """Nodes in ``value`` counting every use of a shared (aliased) list/dict; stops once past ``limit``."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set)):
            stack.extend(node)
    return count


def load_yaml(text: str, *, source: str, error=ValueError, max_nodes: int = MAX_YAML_NODES):
    """``yaml.safe_load(text)``, refusing documents that expand (aliases counted at each use) past ``max_nodes``."""
    import yaml

    try:
        values = yaml.safe_load(text)
    except RecursionError:
        raise error(f"{source}: YAML nested too deeply to parse") from None
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML: {exc}") from None
    if count_nodes(values, max_nodes) > max_nodes:
        raise error(
            f"{source}: YAML expands to more than {max_nodes} nodes once its aliases (*name) are expanded; refused "
            "(a config has a few hundred; repeated aliases of aliases grow exponentially, the 'billion laughs' attack)"
        )
    return values


# ----------------------------------------------------------------------------------------------- images
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


def open_image_file(path: str | Path, *, what: str = "an image", error=ValueError):
    """Open and fully decode an image file: a regular file only (Pillow would block on a FIFO), and a decompression
    bomb (more pixels than ``PIL.Image.MAX_IMAGE_PIXELS``) or an undecodable file named with what was expected."""
    from PIL import Image

    path = require_regular_file(path, what=what, error=error)
    try:
        image = Image.open(path)
        image.load()
    except Image.DecompressionBombError as exc:
        raise error(f"{path}: refused as a possible decompression bomb ({exc}); expected {what}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise error(f"{path}: cannot decode ({type(exc).__name__}: {exc}); expected {what}") from None
    return image


def to_rgb(image, *, name: str = "image", error=ValueError):
    """An 8-bit RGB copy of ``image``, converting every mode correctly.

    ``Image.convert("RGB")`` clips 16-bit grey (``I;16``/``I``, 0-65535) at 255, so a 16-bit photo came out almost
    all white; here it is scaled by 255/65535. Palette, CMYK, grey+alpha... go through Pillow's own conversion.
    Floating-point images (mode ``F``) have no defined range and are refused.
    """
    import numpy as np
    from PIL import Image

    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        array = np.asarray(image).astype(np.int64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise error(f"{name}: 32-bit integer image with values in [{array.min()}, {array.max()}]; expected 8- or 16-bit pixels")
        grey = np.rint(array * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if image.mode == "F":
        raise error(f"{name}: floating-point image (mode 'F') has no defined intensity range; expected an 8- or 16-bit image")
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # the palette's transparency, then drop alpha below
    return image.convert("RGB")


# ----------------------------------------------------------------------------------------------- .npy
def check_npy_size(path: str | Path, *, error=ValueError):
    """``(shape, dtype)`` from a ``.npy`` header, refused when shape x itemsize exceeds the data in the file (a
    header claiming TiBs would otherwise be allocated by ``np.load`` before it finds the file short)."""
    import numpy as np

    path = require_regular_file(path, what="a .npy array", error=error)
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = reader(handle)
            offset = handle.tell()
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise error(f"{path}: not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise error(f"{path}: .npy holds Python objects (dtype {dtype}); expected a numeric array")
    count = 1
    for dimension in shape:
        count *= int(dimension)
    need = count * dtype.itemsize
    if need > size - offset:
        raise error(
            f"{path}: .npy header declares shape {tuple(shape)} of {dtype} ({need} bytes), more than the {size - offset} "
            "bytes the file holds; refused before allocating"
        )
    return tuple(shape), dtype


# ----------------------------------------------------------------------------------------------- paths
def path_inside(base: str | Path, relative: str, *, where: str, error=ValueError) -> Path:
    """``base / relative``, refused when it resolves outside ``base`` (``..`` escapes, symlinks pointing out).

    ``where`` names the file and line (or field) the path came from. A leading ``/`` is expected to have been stripped
    by the caller where the format writes root-relative paths that way (FiT3D split lists)."""
    base = Path(base)
    candidate = Path(relative)
    if not relative or "\x00" in relative or candidate.is_absolute():
        raise error(f"{where}: path {relative!r} must be relative to {base}")
    resolved_base, resolved = base.resolve(), (base / candidate).resolve()
    if resolved != resolved_base and resolved_base not in resolved.parents:
        raise error(f"{where}: path {relative!r} resolves outside {base} (to {resolved}); paths must stay inside the dataset root")
    return base / candidate


# ----------------------------------------------------------------------------------------------- .npz
#: Largest array one member of an index ``.npz`` (ScanNet pairs' ``test.npz``, ``intrinsics.npz``) may hold.
MAX_NPZ_MEMBER_BYTES = 256 * 2**20


def load_npz(path: str | Path, *, what: str = "a .npz archive", error=ValueError, max_member_bytes: int = MAX_NPZ_MEMBER_BYTES) -> dict:
    """Every array of a ``.npz`` as a dict, each member's declared shape x dtype checked (against
    ``max_member_bytes`` and the member's stored size) before numpy allocates it; no pickles."""
    import zipfile

    import numpy as np

    path = require_regular_file(path, what=what, error=error)
    try:
        with zipfile.ZipFile(path) as archive:
            result = {}
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                if info.file_size > max_member_bytes:
                    raise error(f"{path}: member {name!r} declares {info.file_size} bytes, more than the {max_member_bytes} allowed for {what}")
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if reader is None:
                        raise error(f"{path}: member {name!r} has unsupported .npy version {version}")
                    shape, _, dtype = reader(member)
                count = 1
                for dimension in shape:
                    count *= int(dimension)
                if dtype.hasobject:
                    raise error(f"{path}: member {name!r} holds Python objects (dtype {dtype}); expected numeric arrays")
                if count * dtype.itemsize > info.file_size:
                    raise error(
                        f"{path}: member {name!r} declares shape {tuple(shape)} of {dtype} ({count * dtype.itemsize} bytes), more than "
                        f"its {info.file_size} stored bytes; refused before allocating"
                    )
                with archive.open(info) as member:
                    result[name] = np.lib.format.read_array(member, allow_pickle=False)
            return result
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        if isinstance(exc, error):
            raise
        raise error(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); expected {what}") from None
