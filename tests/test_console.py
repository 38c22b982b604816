"""The CLI's output plumbing: foreign writes to stdout go to stderr, finplan's own stay on stdout."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_foreign_output_goes_to_stderr_and_ours_to_stdout():
    """In a child process (the redirect works on file descriptors): a raw write to descriptor 1
    and a print() from other code inside the block land on stderr; the yielded stream and
    anything after the block land on stdout."""
    script = textwrap.dedent("""
        import os, subprocess, sys
        from finplan.cli._console import foreign_output_to_stderr, print_json
        print("before")
        with foreign_output_to_stderr() as real:
            os.write(1, b"raw fd write\\n")
            print("python print from a library")
            subprocess.run([sys.executable, "-c", "print('child process')"], check=True)
            print_json({"ok": True}, file=real)
        print("after")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout == 'before\n{\n  "ok": true\n}\nafter\n'
    for line in ("raw fd write", "python print from a library", "child process"):
        assert line in done.stderr
