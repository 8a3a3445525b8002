"""The mutation-testing command of tests/README.md: pinned, its configuration names files that exist,
and the documented invocations are ones the script accepts (the run itself is slow: not in the suite)."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.mutation import draw, parse

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CONFIG = PYPROJECT["tool"]["mutmut"]


def test_mutmut_is_pinned_to_the_installed_version() -> None:
    (pin,) = [p for p in PYPROJECT["project"]["optional-dependencies"]["test"] if p.startswith("mutmut")]
    assert pin == f"mutmut=={importlib.metadata.version('mutmut')}"


def test_the_configuration_names_modules_and_tests_that_exist() -> None:
    for pattern in CONFIG["only_mutate"]:
        assert list(ROOT.glob(pattern if pattern.endswith(".py") else pattern + ".py")), pattern
    for path in CONFIG["pytest_add_cli_args_test_selection"]:
        assert (ROOT / path).is_file(), path
    assert CONFIG["source_paths"] == ["sidecar"]


def test_the_documented_commands_are_accepted_as_written() -> None:
    readme = (ROOT / "tests" / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^python tests/mutation\.py(.*?)(?:\s+#.*)?$", readme, flags=re.MULTILINE)
    assert len(commands) == 3
    for tail in commands:
        options = parse(shlex.split(tail))
        assert options.max_children == 2
        assert all(name.startswith("sidecar.") for name in options.mutants)
    shown = subprocess.run(
        [sys.executable, "tests/mutation.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "mutant names or globs" in shown.stdout


def test_a_sample_is_the_same_draw_for_the_same_seed_and_a_subset() -> None:
    names = [f"sidecar.m.x_f__mutmut_{n}" for n in range(100)]
    sample = draw(names, 10, seed=1)
    assert sample == draw(list(reversed(names)), 10, seed=1)  # whatever order the listing has
    assert len(set(sample)) == 10 and set(sample) <= set(names)
    assert sample != draw(names, 10, seed=2)
    assert draw(names, 500, seed=1) == sorted(names)
