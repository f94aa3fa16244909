"""Progress bars a person can read in a log file (issue 21): when stderr is not a terminal a bar redraws about 20
times, not every step."""

from __future__ import annotations

import io

from snd.progress import NON_TTY_UPDATES, progress_bar, progress_kwargs


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _redraws(text: str, desc: str) -> int:
    return text.count(f"{desc}:")


def test_a_bar_in_a_log_file_redraws_about_20_times():
    log = io.StringIO()
    for _ in progress_bar(range(10_000), desc="work", file=log):
        pass
    assert 2 <= _redraws(log.getvalue(), "work") <= NON_TTY_UPDATES + 3, log.getvalue()[-500:]
    assert "10000/10000" in log.getvalue()
    unknown = io.StringIO()
    for _ in progress_bar(iter(range(10_000)), desc="work", file=unknown):  # no total: at most once a minute
        pass
    assert _redraws(unknown.getvalue(), "work") <= 3


def test_a_terminal_keeps_tqdms_defaults():
    assert progress_kwargs(1000, _Terminal()) == {}
    assert progress_kwargs(1000, io.StringIO())["miniters"] == 1000 // NON_TTY_UPDATES


def test_the_training_bar_in_a_log_file_is_short(tmp_path, capsys):
    from tests.distill.helpers import TINY, distill_main

    flags = [flag for flag in TINY if flag != "--no_progress"]  # log_every 1: a postfix every step
    assert distill_main([*flags, "--max_steps", "60", "--training.checkpoint_every", "0",
                         "--output_dir", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "60/60" in err
    assert _redraws(err, "distill") <= NON_TTY_UPDATES + 3, err[-2000:]
