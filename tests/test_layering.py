"""The layering of issue 14: import-linter's contracts (pyproject.toml) hold, and only
imnet64.cluster touches the process environment (imnet64.cluster.environment reads it) or
names a launcher's variables (issue 25: doctor had re-parsed about 20 of them)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "imnet64", ROOT / "cli")
ALLOWED = ROOT / "imnet64" / "cluster"
ENV_FUNCTIONS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
# A string that is a launcher variable's name or prefix: what reading one takes
# (env["SLURM_PROCID"], k.startswith("PMI")). Slurm, OpenMPI, PMI/PMIx (and MPICH's
# MPI_LOCAL*), Horovod, tf.distribute; a message that names one for the user
# ("SLURM_PROCID=3 is not a rank of ...") is not a name alone and stays allowed.
LAUNCHER_VARIABLE = re.compile(
    r"(SLURMD?|OMPI|PMIX?|HOROVOD)(_[A-Z0-9_]*)?|MPI_LOCAL[A-Z]*|TF_CONFIG|GPU_DEVICE_ORDINAL")


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


def launcher_variable_names(source: str) -> list[str]:
    """String constants in `source` that are a launcher variable's name or prefix, as
    "line N: 'NAME'" (f-string parts count: f"{x}" around a name does not hide it)."""
    found = [node for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and LAUNCHER_VARIABLE.fullmatch(node.value)]
    found.sort(key=lambda node: (node.lineno, node.col_offset))
    return [f"line {node.lineno}: {node.value!r}" for node in found]


def test_the_checker_sees_each_kind_of_use():
    planted = ("import os\nfrom os import environ\nos.environ.get('X')\nos.getenv('X')\n"
               "os.putenv('X', '1')\nos.unsetenv('X')\n")
    assert len(environment_uses(planted)) == 5
    assert environment_uses("import os\nos.path.join('a')\n") == []


def offenders_outside_cluster(finder: Callable[[str], list[str]]) -> dict[str, list[str]]:
    """What `finder` finds in each module of PACKAGES outside imnet64/cluster/."""
    offenders = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            if path.is_relative_to(ALLOWED):
                continue
            found = finder(path.read_text())
            if found:
                offenders[str(path.relative_to(ROOT))] = found
    return offenders


def test_only_the_cluster_package_touches_the_environment():
    offenders = offenders_outside_cluster(environment_uses)
    assert offenders == {}, ("read the environment through imnet64.cluster.environment."
                             f"Environment instead: {offenders}")


def test_the_launcher_variable_checker_sees_names_not_messages():
    planted = ("env.get('SLURM_NTASKS')\nk.startswith(('PMI', 'OMPI_COMM_WORLD'))\n"
               "env['HOROVOD_RANK']\n'TF_CONFIG' in env\nenv.get('SLURMD_NODENAME')\n"
               "_int(env, 'MPI_LOCALRANKID')\n")
    assert [u.split(": ", 1)[1] for u in launcher_variable_names(planted)] == [
        "'SLURM_NTASKS'", "'PMI'", "'OMPI_COMM_WORLD'", "'HOROVOD_RANK'", "'TF_CONFIG'",
        "'SLURMD_NODENAME'", "'MPI_LOCALRANKID'"]
    messages = ("p = f'SLURM_PROCID={procid} is not a rank'\n"
                "h = 'Default: SLURM_ARRAY_TASK_COUNT, SLURM_NTASKS, 1.'\n"
                "e = ('horovod', 'slurm-batch', 'TF_XLA_FLAGS', 'CUDA_VISIBLE_DEVICES')\n")
    assert launcher_variable_names(messages) == []


def test_only_the_cluster_package_names_launcher_variables():
    offenders = offenders_outside_cluster(launcher_variable_names)
    assert offenders == {}, ("ask imnet64.cluster (environment, launcher_layout) for what "
                             f"the launcher's variables say instead: {offenders}")


def test_import_linter_contracts_are_kept():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports, "import-linter is not installed (requirements/dev)"
    done = subprocess.run([lint_imports, "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
