from pathlib import Path

from tests.readme_blocks import readme_block

ROOT = Path(__file__).resolve().parents[1]


def test_readme_shows_the_tested_example_verbatim():
    # tests/stn/test_example.py runs examples/own_model.py; the README must show that file
    assert readme_block("own_model") == (ROOT / "examples" / "own_model.py").read_text()


def test_readme_starts_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("\n## ")[0]
    assert "make demo" in head and "make test" in head
