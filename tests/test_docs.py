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


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_python_snippets_to_run():
    assert len(readme_python_blocks()) >= 2


def test_every_readme_python_snippet_runs_unchanged_on_the_default_device(device):
    """A script written once, feeding NumPy data as the README shows, runs on each device:
    the fixture makes the test's device the default, as a GPU machine's `auto` would."""
    for index, block in enumerate(readme_python_blocks()):
        namespace: dict = {"__name__": f"readme_block_{index}"}
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
        tensors = [v for v in namespace.values() if type(v).__name__ == "Tensor"]
        assert tensors, f"block {index} made no tensor"
        assert {t.device for t in tensors} == {device}, f"block {index} left the default device"
