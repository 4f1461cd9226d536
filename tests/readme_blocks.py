"""README.md's code blocks marked `<!-- readme-test: NAME -->`: the tests run what users read."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(name: str) -> str:
    text = README.read_text()
    m = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)```", text, re.S)
    if m is None:
        raise LookupError(f"README.md has no python block marked readme-test: {name}")
    return m[1]
