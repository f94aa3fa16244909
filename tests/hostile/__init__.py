"""The hostile-input probe: hundreds of hostile files, inputs and faults run against the real entry points, each
in its own forked process, and classified (clear, unclear, silent, hang, memory, crash, data loss, code execution).

Run it: ``python -m tests.hostile --out probe_out`` (``--family``, ``-k``, ``--jobs``); see ``harness.py``.
"""
