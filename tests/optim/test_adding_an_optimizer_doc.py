"""docs/adding_an_optimizer.md states how many lines each worked example needed: the figures are the files' now."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_worked_examples_line_counts_are_the_files_line_counts():
    doc = (ROOT / "docs" / "adding_an_optimizer.md").read_text()
    claims = re.findall(r"`wc -l ([^`]+)`\s*→\s*([\d +]+) lines", doc)
    assert len(claims) == 2  # Adafactor and Muon
    for files, counts in claims:
        actual = [len((ROOT / name).read_text().splitlines()) for name in files.split()]
        assert [int(n) for n in counts.split("+")] == actual, files
