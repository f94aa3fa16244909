"""The README's "3D-aware features in three lines" snippet runs as written (on a tiny model in the folder it names)."""

from __future__ import annotations

import re
from pathlib import Path

import snd

README = Path(__file__).resolve().parents[2] / "README.md"


def test_three_lines_snippet_runs_offline(tmp_path, monkeypatch):
    text = README.read_text()
    section = text.split("## 3D-aware features in three lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    folder = re.search(r'AutoModel\.from_pretrained\("([^"]+)"\)', code).group(1)
    assert "/" not in folder  # a local folder: the snippet needs no Hub repository
    snd.SnDModel(snd.SnDConfig.tiny()).save_pretrained(tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["features"].shape) == (1, 32, 448 // 14, 644 // 14)  # README says [1, 768, 32, 46] for ViT-B
