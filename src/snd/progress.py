"""Progress bars that stay readable in log files.

On a terminal a bar redraws often, in place. When stderr is not a terminal (a log file, a pipe, a batch scheduler)
each redraw is a new chunk of text: a training run would write hundreds of kilobytes of bars. There
:func:`progress_bar` updates about 20 times per bar (every 5 % of a known total; every minute otherwise).
"""

from __future__ import annotations

import math
import sys

#: redraws of a bar whose total is known, when the output is not a terminal
NON_TTY_UPDATES = 20
#: seconds between redraws of a bar whose total is unknown, when the output is not a terminal
NON_TTY_INTERVAL_S = 60.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_kwargs(total: int | None, file=None) -> dict:
    """The tqdm arguments that throttle a bar of ``total`` steps writing to ``file`` (default stderr) when that is
    not a terminal; ``{}`` on a terminal."""
    if _is_terminal(file if file is not None else sys.stderr):
        return {}
    if total:
        # miniters fixed (not dynamic) and no forced redraw after maxinterval: only every total / 20 steps
        return {"miniters": max(1, math.ceil(total / NON_TTY_UPDATES)), "mininterval": 0.0, "maxinterval": float("inf")}
    return {"mininterval": NON_TTY_INTERVAL_S, "maxinterval": float("inf")}


def progress_bar(iterable=None, total: int | None = None, **kwargs):
    """``tqdm.auto.tqdm(iterable, total=total, **kwargs)``, throttled when the output is not a terminal (see
    :func:`progress_kwargs`); explicit ``miniters`` / ``mininterval`` / ``maxinterval`` arguments win."""
    from tqdm.auto import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if not kwargs.get("disable", False):
        kwargs = {**progress_kwargs(total, kwargs.get("file")), **kwargs}
    return tqdm(iterable, total=total, **kwargs)


__all__ = ["NON_TTY_INTERVAL_S", "NON_TTY_UPDATES", "progress_bar", "progress_kwargs"]
