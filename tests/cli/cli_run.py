"""Running the ``slimkit`` command in tests: in a subprocess (the real entry point) or in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

#: The recipe every compress test runs: one-shot magnitude pruning (deterministic, no training).
RECIPE = """\
version: 1
seed: 0
layers: {kinds: [conv, dense], exclude: ["*logits*"]}
stages:
  - prune: {method: magnitude, sparsity: 0.5, fine_tune: null}
"""


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m slimkit ARGS`` in a fresh process of this interpreter (tests/ importable for factories)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, "-m", "slimkit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def invoke(*args: str) -> tuple[int, str, str]:
    """The command run in this process through Click's runner: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from slimkit.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr
