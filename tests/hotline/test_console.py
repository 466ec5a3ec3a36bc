"""``hotline.console.run``: a command ends with its own exit status, its output whole."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = """
import sys
from hotline.console import run

def command():
    sys.stdout.write("x" * 200_000 + "\\n")  # more than a pipe's buffer
    print("to stderr", file=sys.stderr)
    raise SystemExit({exit})

run(command)
"""


@pytest.mark.parametrize(("exit", "code"), [("None", 0), ("0", 0), ("2", 2), ("'refused'", 1)])
def test_the_status_and_all_output_reach_the_caller(exit: str, code: int) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(exit=exit)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code
    assert done.stdout == "x" * 200_000 + "\n"
    assert done.stderr.startswith("to stderr\n")
    if exit == "'refused'":
        assert done.stderr.endswith("refused\n")
