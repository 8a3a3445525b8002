"""The shell blocks of the runbooks in docs/, as tests/test_runbooks.py runs them.

Every ```bash or ```sh block of a runbook section carries a marker on the line before it:

- ``<!-- runbook -->``: run as written (in ``bash -e``: every command of it succeeds), it exits 0;
- ``<!-- runbook: fails-here "TEXT" -->``: it needs what the embedded test server lacks (a real mongod's
  ``applyOps``); run as written, it exits non-zero and its output holds TEXT, the failure the doc names;
- ``<!-- runbook: setup -->``: the ``export`` lines the reader sets (the test sets those variables);
- ``<!-- runbook: not-here REASON -->``: needs what no test machine has (a Kubernetes cluster).

A variable the reader sets at the top of a block (``OP=1733030467:1   # ...``) takes the test's value;
nothing else in a block is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
# doc -> the headings of its runbook sections (None: the whole doc)
RUNBOOKS: dict[str, tuple[str, ...] | None] = {
    "verify-restore.md": ("## Restore to a point in time",),
    "pitr.md": ("## Finding the bad operation", "## Reading slices with the stock tools"),
    "pitr-restore.ko.md": None,
    "alerts.md": None,
    "alerts.ko.md": None,
    "deployment.md": ("## Point-in-time recovery in each mode", "## From the runbook to the sidecar"),
    "deployment.ko.md": ("## 모드별 시점 복구", "## 런북에서 사이드카로"),
}
KINDS = ("run", "fails-here", "setup", "not-here")

_BLOCK = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.M | re.S)
_MARK = re.compile(r"<!-- runbook(?::\s*(?P<kind>[\w-]+)(?:\s+(?P<arg>.*?))?)?\s*-->\s*$")
_ASSIGNMENT = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>\S*)(?P<rest>.*)$", re.M)
_EXPORT = re.compile(r"\bexport\s+([A-Z][A-Z0-9_]*)=")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence
    kind: str | None  # None: a shell block without a marker (a defect the test reports)
    arg: str
    body: str

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def expected_failure(self) -> str:
        return self.arg.strip().strip('"')

    def exports(self) -> list[str]:
        return _EXPORT.findall(self.body)

    def script(self, values: dict[str, str]) -> str:
        """The block with the reader's own assignments (``NAME=value``) given the test's values."""

        def assign(match: re.Match[str]) -> str:
            name = match["name"]
            if name not in values:
                return match[0]
            return f"{name}={_quoted(values[name])}{match['rest']}"

        return _ASSIGNMENT.sub(assign, self.body)


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _headings(text: str) -> list[tuple[int, int, str]]:
    """(offset, level, line) of each heading outside the code blocks."""
    found, fenced, offset = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            found.append((offset, len(line) - len(line.lstrip("#")), line.rstrip("\n")))
        offset += len(line)
    return found


def _sections(text: str, headings: tuple[str, ...] | None) -> list[tuple[int, int]]:
    """(start, end) character ranges of the runbook sections (a section ends at the next heading of
    its level or above)."""
    if headings is None:
        return [(0, len(text))]
    marks, ranges = _headings(text), []
    for heading in headings:
        at = [i for i, (_, _, line) in enumerate(marks) if line.startswith(heading)]
        if not at:
            raise AssertionError(f"no section {heading!r}")
        start, level, _ = marks[at[0]]
        end = next((o for o, lvl, _ in marks[at[0] + 1 :] if lvl <= level), len(text))
        ranges.append((start, end))
    return ranges


def blocks(doc: str) -> list[Block]:
    """The shell blocks of the runbook sections of ``doc``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    found = []
    for start, end in _sections(text, RUNBOOKS[doc]):
        for match in _BLOCK.finditer(text, start, end):
            if match["lang"] not in ("bash", "sh"):
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = _MARK.match(before.strip())
            kind = (mark["kind"] or "run") if mark else None
            arg = (mark["arg"] or "") if mark else ""
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(doc, line, kind, arg, match["body"]))
    return found


def all_blocks() -> list[Block]:
    return [b for doc in RUNBOOKS for b in blocks(doc)]
