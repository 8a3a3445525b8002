"""Mutation testing of the data-safety code: ``mutmut run`` over ``[tool.mutmut]`` of pyproject.toml,
then ``mutmut results``. The mutants' tests start their servers as the suite does (or use
SIDECAR_TEST_MONGODB_URI): one server shared by every mutant's tests collects the whole run's oplog,
and each oplog query of the embedded server reads all of it, until the archiver's tests time out.
Run from anywhere: ``python tests/mutation.py [--max-children N] [--sample N --seed S] [MUTANT ...]``
(MUTANT: names or globs such as ``"sidecar.store.retention.*"``; none: every mutant). See tests/README.md.

Every mutant takes hours on two cores (about 3 s each); ``--sample N`` runs N of them drawn at random
(``--seed``: the same draw again) and counts the sample's results, an estimate of the whole run's.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_MUTANT = "sidecar.no_such_module.*"  # generates the mutants and measures the tests, runs none


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--sample", type=int, help="run this many mutants drawn at random (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="the draw of --sample (default 0)")
    parser.add_argument("mutants", nargs="*", help="mutant names or globs (default: all)")
    options = parser.parse_args(argv)
    if options.sample is not None and (options.sample < 1 or options.mutants):
        parser.error("--sample takes a positive number and no mutant names")
    return options


def mutmut(*args: str, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], cwd=ROOT, env=env, capture_output=capture, text=True)


def statuses(env: dict[str, str]) -> dict[str, str]:
    """Every generated mutant's status (``not checked`` before it ran)."""
    listing = mutmut("results", "--all", "true", env=env, capture=True).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)
    return dict(pair for pair in pairs if len(pair) == 2)


def draw(names: list[str], size: int, seed: int) -> list[str]:
    return sorted(random.Random(seed).sample(sorted(names), min(size, len(names))))


def run_sample(options: argparse.Namespace, env: dict[str, str]) -> int:
    # draw from the mutants of the code as it is: mutants/ may hold an earlier generation's names
    mutmut("run", "--max-children", str(options.max_children), NO_MUTANT, env=env)
    chosen = draw(list(statuses(env)), options.sample, options.seed)
    code = mutmut("run", "--max-children", str(options.max_children), *chosen, env=env).returncode
    found = statuses(env)
    results = {name: found.get(name, "missing") for name in chosen}
    print(f"sample of {len(chosen)} of {len(found)} mutants (seed {options.seed}):")
    print(", ".join(f"{status} {n}" for status, n in Counter(results.values()).most_common()))
    for name, status in results.items():
        if status != "killed":
            print(f"    {name}: {status}")
    return code


def main(argv: list[str]) -> int:
    options = parse(argv)
    # the tests must import the mutated copy under mutants/, not a checkout named on PYTHONPATH
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if options.sample is not None:
        return run_sample(options, env)
    code = mutmut("run", "--max-children", str(options.max_children), *options.mutants, env=env).returncode
    return code or mutmut("results", env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
