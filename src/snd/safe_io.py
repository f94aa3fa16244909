"""Reading small metadata files (YAML configs, JSON metadata) without hanging or running out of memory, with
errors that name the file and what was expected.

* only regular files are opened: a named pipe (FIFO) would block ``open()``/``read()`` forever, a device
  such as ``/dev/zero`` would read without end (:func:`require_regular_file`);
* text is read up to a size bound and decoded as strict UTF-8 (:func:`read_text`);
* JSON nested deeper than the parser can follow is refused with the file's name (:func:`load_json`);
* YAML aliases are bounded: a "billion laughs" document (anchors referencing anchors, each alias doubling the
  expanded size) loads cheaply as shared references but expands without bound as soon as anything copies or
  dumps it, so the expanded node count is checked after loading (:func:`load_yaml`).

Each function takes ``error``, the exception class to raise (a ``ConfigError``, ``SceneDataError``...; it is
called with the message only).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

__all__ = ["MAX_TEXT_BYTES", "MAX_YAML_NODES", "count_nodes", "load_json", "load_yaml", "read_text", "require_regular_file"]

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
