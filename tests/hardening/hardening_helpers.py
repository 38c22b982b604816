"""Helpers of the hardening tests: run the CLI in-process and check that a refused command
wrote nothing."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parent / "deploy", HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from helpers import assert_bad_input, cli  # noqa: E402,F401


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with the sha256 of its bytes (folders: "dir")."""
    state = {}
    for path in sorted(Path(folder).rglob("*")):
        rel = str(path.relative_to(folder))
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def refused(capsys, folder: Path, *argv, fragments=(), exit_code: int = 2) -> str:
    """Run ``finplan ARGV``; assert one line on stderr (holding ``fragments``), exit 2, no
    traceback, and ``folder`` exactly as before (nothing written, nothing deleted)."""
    before = snapshot(folder)
    code, out, err = cli(capsys, *argv)
    line = assert_bad_input(code, out, err, *fragments, exit_code=exit_code)
    assert snapshot(folder) == before, "a refused command changed files"
    return line
