"""scripts/screenshots.py on one cheap page: a real worker, dashboard and Chromium in a fresh data folder,
the Corpora page empty and with an uploaded corpus, written as PNGs and listed in index.md."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from test_app import ROOT
from test_browser import chromium_path

pytestmark = pytest.mark.browser

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_only_the_corpora_page_gives_its_two_states(tmp_path):
    chromium_path()  # skips or fails with what to do when Chromium is missing
    out = tmp_path / "shots"
    env = {**os.environ, "ADAPT_DISTILL_HOME": str(tmp_path / "not-used")}
    result = subprocess.run([sys.executable, "scripts/screenshots.py", "--only", "corpora", "--out", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2 and all(re.fullmatch(r"\d\d-corpora-\w+\.png", name) for name in pngs), pngs
    assert pngs[0].endswith("-corpora-empty.png") and pngs[1].endswith("-corpora-corpus.png")
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000, (name, len(data))
        width = int.from_bytes(data[16:20], "big")  # the IHDR chunk: width, then height
        height = int.from_bytes(data[20:24], "big")
        assert width == 1280 and height >= 900, (name, width, height)

    index = (out / "index.md").read_text(encoding="utf-8")
    listed = re.findall(r"\[(\d\d-[\w-]+\.png)\]\(\1\) \| (\w+) \|", index)
    assert listed == [(name, "Corpora") for name in pngs], index
    assert not (tmp_path / "not-used").exists(), "the script makes a data folder of its own"
