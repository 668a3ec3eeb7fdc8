"""Executes every ```python block of every tutorials/*.md chapter, in order.

One namespace per chapter (blocks share variables, like cells of a notebook), run in a temporary directory
so figures the chapter writes land there. A chapter that raises fails its test, so the course cannot rot.

Run: pytest -q tests/test_tutorials.py            (or -k 00 for one chapter)
"""

import re
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
CHAPTERS = sorted(TUTORIALS.glob("*.md"))
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(text):
    """The source of each fenced ```python block, in order."""
    return [m.group(1) for m in BLOCK.finditer(text)]


def test_block_extraction_finds_fenced_python_only():
    text = "prose\n```python\na = 1\n```\n```bash\nrm -rf /\n```\n```python\nb = a + 1\n```\n"
    assert python_blocks(text) == ["a = 1\n", "b = a + 1\n"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_runs(chapter, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")  # no display on CI; figures are saved, not shown
    blocks = python_blocks(chapter.read_text())
    assert blocks, f"{chapter.name} has no ```python blocks"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"tutorial_{chapter.stem}"}
    for i, source in enumerate(blocks):
        code = compile(source, f"{chapter.name}[block {i}]", "exec")
        exec(code, namespace)  # noqa: S102 -- our own tutorial text, never user input
    import matplotlib.pyplot as plt

    plt.close("all")
