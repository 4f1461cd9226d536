"""environment.yml (conda, clusters) and pyproject.toml (pip, CI) must name the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower()


def _pins(reqs):
    out = {}
    for r in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==?\s*([0-9][^\s,;]*)$", r.strip())
        if m:
            out[CONDA_NAMES.get(m[1].lower(), m[1].lower())] = m[2]
    return out


def _environment() -> tuple[list[str], list[str]]:
    """(conda dependencies, pip dependencies) of environment.yml, read without a YAML library."""
    conda, pip, in_pip = [], [], False
    for line in (ROOT / "environment.yml").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()[2:].strip() if line.strip().startswith("- ") else None
        if item is None:
            in_pip = in_pip and indent > 4
            continue
        if item == "pip:":
            in_pip = True
        elif in_pip and indent >= 6:
            pip.append(item)
        else:
            in_pip = False
            conda.append(item)
    return conda, pip


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    conda, pip = _environment()
    have = {CONDA_NAMES.get(_name(c), _name(c)) for c in conda} | {_name(p) for p in pip}
    missing = sorted({_name(r) for r in wanted} - have)
    assert not missing, f"environment.yml lacks {missing}"
    extra = sorted({_name(p) for p in pip if not p.startswith("-")} - {_name(r) for r in wanted})
    assert not extra, f"environment.yml has pip packages pyproject.toml lacks: {extra}"
    # the pins of torch and torchvision agree
    pins_py, pins_conda = _pins(wanted), _pins(conda)  # _pins reads "=" and "=="
    for pkg in ("torch", "torchvision"):
        assert pins_py[pkg] == pins_conda[pkg], f"{pkg}: {pins_py[pkg]} vs {pins_conda[pkg]}"
    assert any(c.startswith("python=3.11") for c in conda)
