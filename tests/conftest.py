"""Test-wide settings: offline, CPU, tiny and deterministic.

Environment variables are set before anything imports huggingface_hub or gsplat: an online
hub lookup retries for ~50 s here, and gsplat tries to JIT-compile CUDA into
TORCH_EXTENSIONS_DIR when its rasterizer is touched.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="snd-torch-ext-"))
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="snd-hf-home-"))
# One intra-op thread, here and in every script a test launches: the tensors are tiny, and with `-n 2` on two
# cores a second thread per worker only spins (measured: tests/eval/test_probes.py + test_nerfstudio.py took
# 37 s with 2 threads and 8 s with 1 on the 2-core CI machine). Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # also when OMP_NUM_THREADS was set higher by the caller


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
