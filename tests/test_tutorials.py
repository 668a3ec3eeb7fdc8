"""Executes every ```python block of every tutorials/*.md chapter, in order.

One namespace per chapter (blocks share variables, like cells of a notebook), run in a temporary directory
so figures the chapter writes land there. A chapter that raises fails its test, so the course cannot rot.
The chapters run in a child started at collection (tests/conftest.py: on the core the one-threaded suite leaves
idle), which runs this file as a script; each test reads its chapter's result ("ok" or the traceback).

Run: pytest -q tests/test_tutorials.py            (or -k 00 for one chapter)
     python tests/test_tutorials.py OUT CHAPTER...   (what the child runs: OUT/<chapter>.txt is "ok" or the error)
"""

import os
import re
import sys
import tempfile
import traceback
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


def run_chapter(chapter, folder):
    """Execute the chapter's python blocks in order, in one namespace, with `folder` as the working directory."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI; figures are saved, not shown
    blocks = python_blocks(Path(chapter).read_text())
    assert blocks, f"{Path(chapter).name} has no ```python blocks"
    here = os.getcwd()
    os.chdir(folder)
    try:
        namespace = {"__name__": f"tutorial_{Path(chapter).stem}"}
        for i, source in enumerate(blocks):
            code = compile(source, f"{Path(chapter).name}[block {i}]", "exec")
            exec(code, namespace)  # noqa: S102 -- our own tutorial text, never user input
    finally:
        os.chdir(here)
        import matplotlib.pyplot as plt

        plt.close("all")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_runs(chapter, chapter_result):
    result = chapter_result(chapter)
    assert result == "ok", f"{chapter.name} raised in the background child:\n{result}"


if __name__ == "__main__":  # python tests/test_tutorials.py OUT CHAPTER...: each chapter in its own temporary folder
    sys.path.insert(0, str(TUTORIALS.parent))  # this checkout's minidp, as in the test process
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, sys.argv[2:]):
        with tempfile.TemporaryDirectory() as folder:
            try:
                run_chapter(path, folder)
                message = "ok"
            except BaseException:  # noqa: B036 -- reported to the test, whatever it was
                message = traceback.format_exc()
        (out / f"{path.stem}.txt").write_text(message)
