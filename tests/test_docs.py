"""docs/batchnorm.md maps each formula to a quoted line of code: every quote must still be in the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_code_quote_in_the_formula_map_is_in_batch_norm_py():
    doc = (ROOT / "docs" / "batchnorm.md").read_text()
    source = (ROOT / "minigraph" / "ops" / "batch_norm.py").read_text()
    rows = [line for line in doc.splitlines() if re.match(r"\| .* \| `BatchNorm(Eval)?\.\w+` \|", line)]
    assert len(rows) >= 10  # the table is there and was parsed
    quotes = [q for row in rows for q in re.findall(r"`([^`]+)`", row.split("|")[3])]
    missing = [q for q in quotes if q not in source]
    assert not missing, f"quoted in docs/batchnorm.md but not in the code: {missing}"
