"""``python -m tests.hostile --out DIR [--family F ...] [-k TEXT] [--jobs N] [--list]``

Imports every module in ``tests/hostile/cases``, calls each selected module's ``prepare(fixtures)`` once in this
process (shared fixtures such as a finished tiny run, built before forking), runs the cases and writes
``DIR/results.jsonl``, ``DIR/summary.json`` and ``DIR/report.md``. Exit status 1 when any case crashed, hung, ran
out of memory, lost data, executed code or broke the probe itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys  # noqa: E402

# The checkout's own src first (as pytest's ``pythonpath``): a worktree or second clone measures its own code, not
# another checkout's editable install.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(_REPO, "src"), _REPO]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import pkgutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def load_case_modules() -> dict:
    from tests.hostile import cases as package

    modules = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if not info.name.startswith("_"):
            modules[f"{package.__name__}.{info.name}"] = importlib.import_module(f"{package.__name__}.{info.name}")
    return modules


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hostile", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", type=Path, required=True, help="a new or empty folder for fixtures, work and reports")
    parser.add_argument("--family", action="append", default=[], help="only these families (repeatable)")
    parser.add_argument("-k", dest="keyword", default="", help="only cases whose id contains this text")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (each in its own forked process)")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    args = parser.parse_args(argv)

    os.environ.setdefault("TORCH_EXTENSIONS_DIR", tempfile.mkdtemp(prefix="snd-probe-ext-"))
    import torch

    torch.set_num_threads(1)
    from tests.hostile.harness import CASES, FATAL, report_markdown, run_cases, summarise

    modules = load_case_modules()
    selected = [
        case for case in CASES.values()
        if (not args.family or case.family in args.family) and args.keyword in case.id
    ]
    if args.list:
        for case in selected:
            print(case.id, "(valid)" if case.valid else "")
        print(f"{len(selected)} cases", file=sys.stderr)
        return 0
    out = args.out
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out}: the folder exists and is not empty (the probe writes work folders into it)")
    out.mkdir(parents=True, exist_ok=True)
    fixtures = out / "fixtures"
    fixtures.mkdir()
    for name in sorted({case.setup.__module__ for case in selected}):
        prepare = getattr(modules.get(name), "prepare", None)
        if prepare is not None:
            print(f"preparing {name} ...", file=sys.stderr, flush=True)
            prepare(fixtures / name.rsplit(".", 1)[-1])

    log = open(out / "results.jsonl", "w")
    total = len(selected)
    done = [0]

    def on_result(result):
        done[0] += 1
        log.write(json.dumps(dataclasses.asdict(result)) + "\n")
        log.flush()
        print(f"[{done[0]}/{total}] {result.outcome:13s} {result.id} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)

    results = run_cases(selected, out, jobs=args.jobs, on_result=on_result)
    summary = summarise(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(results))
    total_counts = summary["total"]
    print(json.dumps(total_counts), file=sys.stderr)
    return 1 if any(total_counts[outcome] for outcome in FATAL) else 0


if __name__ == "__main__":
    sys.exit(main())
