"""Mutation testing of the data-safety code: ``mutmut run`` over ``[tool.mutmut]`` of pyproject.toml,
with one embedded server for every mutant's tests (unless SIDECAR_TEST_MONGODB_URI names one), then
``mutmut results``. Run from anywhere: ``python tests/mutation.py [--max-children N] [MUTANT ...]``
(MUTANT: names or globs such as ``"sidecar.store.retention.*"``; none: every mutant). See tests/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
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
    server = None
    if not env.get("SIDECAR_TEST_MONGODB_URI"):
        sys.path.insert(0, str(ROOT))
        from sidecar.embedded import EmbeddedServer

        server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="mutmut-mongo-")) / "data").start()
        env["SIDECAR_TEST_MONGODB_URI"] = server.uri
    try:
        code = mutmut("run", "--max-children", str(options.max_children), *options.mutants, env=env)
        return code or mutmut("results", env=env)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
