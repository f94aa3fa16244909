"""One of two processes that pretend to be the main process of two different machines (global ranks 0 and 1,
each with local rank 0) in a gloo group, for tests/reliability/test_output_dir.py. Not a test module.

    python -m tests.reliability.two_nodes RANK PORT SHARED_RUN SHARED_DIR OWN_DIR REPORT
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace


def main(rank: int, port: int, shared_run: str, shared_dir: str, own_dir: str, report: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch.distributed as dist

    from snd.distill.config import ConfigError
    from snd.distill.launch import check_output_dir, check_shared_output_dir

    dist.init_process_group("gloo", rank=rank, world_size=2)
    result = {"rank": rank}
    # 1. both "machines" settle the same folder under --overwrite_output_dir at once: only global rank 0 removes
    try:
        check_output_dir(shared_run, resume_from_checkpoint=None, overwrite_output_dir=True)
        result["overwrite"] = "ok"
    except Exception as error:  # noqa: BLE001 - reported to the test
        result["overwrite"] = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
    dist.barrier()
    # 2. the shared-filesystem check on one folder both see, then on a folder of each one's own (two machines' disks)
    accelerator = SimpleNamespace(num_processes=2, process_index=rank, local_process_index=0, is_main_process=rank == 0,
                                  is_local_main_process=True)
    for key, folder in (("shared", shared_dir), ("separate", own_dir)):
        try:
            check_shared_output_dir(accelerator, folder, wait_s=0.5)
            result[key] = "ok"
        except ConfigError as error:
            result[key] = f"ConfigError: {error}"
    Path(report).write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:7])
