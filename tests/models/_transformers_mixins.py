"""transformers' own common test mixins (`ModelTesterMixin`, `BackboneTesterMixin`, `ConfigTester`,
`ImageProcessingTestMixin`), for the installed transformers version, imported from its source distribution.

The wheel ships no tests; the sdist ships `tests/test_*_common.py` (Apache-2.0), but not the helper modules they
import (`tests/exporters`, `tests/generation`, `tests/utils`, the repository's `utils/fetch_hub_objects_for_ci.py`).
`load()` fetches the sdist once with pip (`pip download --no-binary :all: --no-deps transformers==<installed>`),
extracts the four common files and the licence into a cache folder, writes small stand-ins for the missing helpers
(documented in each), and imports the files as a package of their own (never as `tests`, which is ours).

Cache: `$SND_TEST_CACHE`, else `$XDG_CACHE_HOME/snd-tests`, else `~/.cache/snd-tests`, one folder per version.
Offline: point `$SND_TRANSFORMERS_SDIST` at a downloaded `transformers-<version>.tar.gz`. Where neither the cache,
that file nor the network gives the sdist, `load()` raises `MixinsUnavailable` with the reason (the tests skip).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

VERSION = transformers.__version__
COMMON_FILES = (
    "test_modeling_common.py",
    "test_backbone_common.py",
    "test_configuration_common.py",
    "test_image_processing_common.py",
)
PACKAGE = "hf_common_tests_" + "".join(c if c.isalnum() else "_" for c in VERSION)

# Stand-ins for the modules the common files import that the sdist leaves out.
_STUBS = {
    "__init__.py": '"""transformers {version} tests/test_*_common.py (Apache-2.0, see LICENSE), fetched by snd\'s test suite."""\n',
    "exporters/__init__.py": "",
    "exporters/test_export.py": (
        '"""Stand-in: transformers\' tests/exporters is not in the sdist. `ModelTesterMixin` derives from\n'
        "`ExportTesterMixin` (torch.export tests); without it those tests are not run (snd's own export tests are\n"
        'in tests/models/test_snd_dinov2_transformers.py)."""\n\n\n'
        "class ExportTesterMixin:\n    pass\n"
    ),
    "generation/__init__.py": "",
    "generation/test_utils.py": (
        '"""Stand-in: tests/generation is not in the sdist; only `issubclass(..., GenerationTesterMixin)` is used\n'
        '(SnD models do not generate)."""\n\n\n'
        "class GenerationTesterMixin:\n    pass\n"
    ),
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": (
        '"""Stand-in: tests/utils is not in the sdist. `config_common_kwargs`: a non-default value for each of\n'
        "`PreTrainedConfig`'s own arguments (ConfigTester.check_config_arguments_init checks that a config keeps\n"
        'them)."""\n\n'
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "output_attentions": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["BertModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": 0},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
    # test_image_processing_common appends <package>/../utils to sys.path and imports this (the repository's
    # utils/ folder, not in the sdist): test images are fetched from their URL (tests needing them need the network).
    "../utils/fetch_hub_objects_for_ci.py": (
        '"""Stand-in for transformers\' utils/fetch_hub_objects_for_ci.py (not in the sdist)."""\n\n\n'
        "def url_to_local_path(url, return_url_if_not_found=True):\n    return url\n"
    ),
}


class MixinsUnavailable(RuntimeError):
    pass


def cache_root() -> Path:
    if os.environ.get("SND_TEST_CACHE"):
        return Path(os.environ["SND_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "snd-tests"


def _fetch_sdist(folder: Path) -> Path:
    given = os.environ.get("SND_TRANSFORMERS_SDIST")
    if given:
        if not Path(given).is_file():
            raise MixinsUnavailable(f"SND_TRANSFORMERS_SDIST={given} is not a file")
        return Path(given)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
               "--retries", "1", "--timeout", "15",  # offline: fail in seconds, not minutes
               f"transformers=={VERSION}", "--dest", str(folder)]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise MixinsUnavailable(f"could not run pip download for transformers=={VERSION}: {error}") from None
    found = sorted(folder.glob("transformers-*.tar.gz"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no sdist"]
        raise MixinsUnavailable(
            f"transformers=={VERSION} sdist not cached in {cache_root()} and pip download failed (offline?): {tail[0]}; "
            "set SND_TRANSFORMERS_SDIST to a downloaded sdist to run these tests offline"
        )
    return found[0]


def _extract(sdist: Path, package_dir: Path) -> None:
    wanted = {f"tests/{name}": name for name in COMMON_FILES}
    wanted["LICENSE"] = "LICENSE"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            relative = member.name.split("/", 1)[-1]
            if relative in wanted and member.isfile():
                (package_dir / wanted.pop(relative)).write_bytes(archive.extractfile(member).read())
    if wanted:
        raise MixinsUnavailable(f"{sdist.name} lacks {sorted(wanted)}")


def prepare() -> Path:
    """The folder holding the importable package `PACKAGE` (built once, under a file lock)."""
    from filelock import FileLock

    root = cache_root() / f"transformers-{VERSION}"
    package_dir = root / PACKAGE
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if (root / ".complete").is_file():
            return root
        with tempfile.TemporaryDirectory(dir=root.parent) as scratch:
            staging = Path(scratch) / "staging"
            (staging / PACKAGE).mkdir(parents=True)
            _extract(_fetch_sdist(Path(scratch)), staging / PACKAGE)
            for relative, text in _STUBS.items():
                path = (staging / PACKAGE / relative).resolve()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text.format(version=VERSION) if relative == "__init__.py" else text)
            (staging / "SOURCE.txt").write_text(
                f"transformers {VERSION} sdist (PyPI), tests/{{{','.join(COMMON_FILES)}}} and LICENSE, "
                "plus stand-ins for the helper modules the sdist leaves out.\n"
            )
            if root.exists():
                shutil.rmtree(root)
            staging.rename(root)
            (root / ".complete").touch()
    assert package_dir.is_dir()
    return root


def load(name: str) -> ModuleType:
    """`name` (e.g. "test_modeling_common") from transformers' common tests of the installed version."""
    if importlib.util.find_spec("parameterized") is None:
        raise MixinsUnavailable("transformers' common tests need `parameterized` (pip install parameterized; in snd[dev])")
    if PACKAGE not in sys.modules:
        root = prepare()
        spec = importlib.util.spec_from_file_location(
            PACKAGE, root / PACKAGE / "__init__.py", submodule_search_locations=[str(root / PACKAGE)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{name}")
