"""The suite itself: every test's fixtures exist. ``--collect-only`` does not look for a
test's fixtures, so one lost in a move would first fail at the end of a half-hour run;
pytest's setup plan (nothing set up, nothing run) finds it in a second."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_s_fixtures_exist():
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--setup-plan", "-q", "-p", "no:cacheprovider",
         "-n", "0", "--durations=0", str(TESTS)],
        capture_output=True, text=True, timeout=120, cwd=TESTS.parent, stdin=subprocess.DEVNULL,
    )
    missing = [line for line in result.stdout.splitlines() if "not found" in line]
    assert result.returncode == 0 and not missing, missing or result.stdout[-3000:]
