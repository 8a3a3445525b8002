"""What the CLI prints: its top-level help, and counts in the number that agrees with them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sidecar.text import counted

SIDECAR = str(Path(sys.executable).with_name("sidecar"))


def test_top_level_help_is_plain_text_with_every_command_and_the_exit_codes() -> None:
    done = subprocess.run([SIDECAR, "--help"], capture_output=True, text=True, check=True)
    assert "`" not in done.stdout
    for command in ("serve", "backup", "verify", "restore", "list", "prune", "demo"):
        assert f"    {command} " in done.stdout
    assert "Exit codes: 0 success; 1 a failed job" in " ".join(done.stdout.split())


def test_counts_agree_with_their_nouns() -> None:
    assert counted(1, "document") == "1 document"
    assert counted(0, "document") == "0 documents"
    assert counted(12345, "archive") == "12,345 archives"
    assert counted(2, "index build") == "2 index builds"
    assert counted(1, "entry", "entries") == "1 entry" and counted(3, "entry", "entries") == "3 entries"
