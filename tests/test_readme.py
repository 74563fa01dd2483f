"""Every ```python block of README.md runs, each in a fresh Python process in an empty directory
(so a block cannot lean on another's state, and what it writes stays in a temporary directory).

A block directly preceded by ``<!-- readme-test: known-failure ERROR: why -->`` is expected to
fail with ERROR (an exception name) in its traceback: a strict xfail, so once it passes the test
reports XPASS as a failure and the marker must go; failing in any other way is a plain failure.
Each block starts a Python process (and some start Ray and train), so the blocks are marked slow.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: known-failure (?P<reason>.*?) -->\n)?```python\n"
                   r"(?P<code>.*?)```", re.S)


def readme_blocks() -> list:
    params = []
    text = README.read_text()
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        marks, expected = [], None
        if match["reason"]:
            expected = match["reason"].split(":")[0]
            marks.append(pytest.mark.xfail(reason=match["reason"], strict=True,
                                           raises=AssertionError))
        params.append(pytest.param(match["code"], expected, id=f"README.md:{line}", marks=marks))
    return params


BLOCKS = readme_blocks()


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("code, expected", BLOCKS)
def test_readme_python_block_runs(code, expected, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    if expected is not None and done.returncode != 0 and expected not in done.stderr:
        pytest.fail(f"the known failure was to be {expected}, got: {done.stderr[-3000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
