"""The layering of issue 14: import-linter's contracts (pyproject.toml) hold, and only
imnet64.cluster touches the process environment (imnet64.cluster.environment reads it)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "imnet64", ROOT / "cli")
ALLOWED = ROOT / "imnet64" / "cluster"
ENV_FUNCTIONS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_uses(source: str) -> list[str]:
    """`os.environ`-like attributes and `from os import environ`-like imports in `source`,
    as "line N: what"."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ENV_FUNCTIONS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "posix"):
            names = {alias.name for alias in node.names} & ENV_FUNCTIONS
            found += [f"line {node.lineno}: from {node.module} import {n}" for n in names]
    return found


def test_the_checker_sees_each_kind_of_use():
    planted = ("import os\nfrom os import environ\nos.environ.get('X')\nos.getenv('X')\n"
               "os.putenv('X', '1')\nos.unsetenv('X')\n")
    assert len(environment_uses(planted)) == 5
    assert environment_uses("import os\nos.path.join('a')\n") == []


def test_only_the_cluster_package_touches_the_environment():
    offenders = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if path.is_relative_to(ALLOWED):
                continue
            uses = environment_uses(path.read_text())
            if uses:
                offenders[str(path.relative_to(ROOT))] = uses
    assert offenders == {}, ("read the environment through imnet64.cluster.environment."
                             f"Environment instead: {offenders}")


def test_import_linter_contracts_are_kept():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (requirements/dev)"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
