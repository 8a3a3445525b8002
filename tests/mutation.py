"""Mutation testing of the data-safety code: ``mutmut run`` over ``[tool.mutmut]`` of pyproject.toml,
then ``mutmut results``. The mutants' tests start their servers as the suite does (or use
SIDECAR_TEST_MONGODB_URI): one server shared by every mutant's tests collects the whole run's oplog,
and each oplog query of the embedded server reads all of it, until the archiver's tests time out.
Run from anywhere: ``python tests/mutation.py [--max-children N] [MUTANT ...]``
(MUTANT: names or globs such as ``"sidecar.store.retention.*"``; none: every mutant). See tests/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("mutants", nargs="*", help="mutant names or globs (default: all)")
    return parser.parse_args(argv)


def mutmut(*args: str, env: dict[str, str]) -> int:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    options = parse(argv)
    # the tests must import the mutated copy under mutants/, not a checkout named on PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = mutmut("run", "--max-children", str(options.max_children), *options.mutants, env=env)
    return code or mutmut("results", env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
