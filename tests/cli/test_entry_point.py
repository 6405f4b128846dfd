"""The ``slimkit`` command as users start it: ``python -m slimkit`` in a fresh process, and the console
script pyproject declares. Importing the command loads no framework."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from cli.cli_run import run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"slimkit": "slimkit.cli:main"}
    assert any(dep.startswith("click") for dep in project["dependencies"])


def test_help_lists_every_command_and_loads_no_framework():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("compress", "inspect", "export", "bench", "recipe", "Exit codes"):
        assert command in proc.stdout
    code = ("import sys; from slimkit.cli import cli; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_error_through_the_entry_point(files):
    proc = run_cli("inspect", files / "corrupt.pt", "--factory", "twins:torch_cnn")
    assert proc.returncode == 4
    assert proc.stderr.startswith("slimkit: error: MODEL ") and "corrupt.pt" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
