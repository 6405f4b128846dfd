"""`import slimkit` is framework-free: no framework import anywhere in core, none loaded at runtime."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import slimkit

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "onnxruntime")
#: onnx and onnxruntime belong to the deployment layer (core/deploy), which core reaches lazily.
DEPLOYMENT = ("onnx", "onnxruntime")
CORE = Path(slimkit.__file__).resolve().parent


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import statement and literal importlib.import_module / __import__ call."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return found


def test_core_is_the_slimkit_package():
    assert CORE.name == "core" and (CORE / "recipe.py").is_file()


def test_the_scanner_sees_every_kind_of_import():
    tree = ast.parse(textwrap.dedent("""
        import torch.nn as nn
        def f():
            from keras import layers
            importlib.import_module("onnxruntime")
            __import__("tf2onnx")
    """))
    assert [m for _, m in imported_modules(tree)] == ["torch.nn", "keras", "onnxruntime", "tf2onnx"]


def test_no_framework_import_anywhere_in_core():
    """No training framework anywhere in core; onnx and onnxruntime only in the deployment layer."""
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10
    offenders = []
    for path in files:
        deployment = path.relative_to(CORE).parts[0] == "deploy"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(tree):
            root = module.split(".")[0]
            if root in FRAMEWORKS and not (deployment and root in DEPLOYMENT):
                offenders.append(f"{path.relative_to(CORE)}:{line} imports {module}")
    assert offenders == []


def test_core_reaches_the_deployment_layer_lazily():
    """Outside core/deploy, core imports only the seam (slimkit.deploy) and its op tables."""
    allowed = {"slimkit.deploy", "slimkit.deploy.ops"}
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        if path.relative_to(CORE).parts[0] == "deploy":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("slimkit.deploy") \
                    and node.module not in allowed:
                offenders.append(f"{path.relative_to(CORE)}:{node.lineno} imports {node.module}")
    assert offenders == []


def test_using_slimkit_loads_no_framework(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - prune: {sparsity: 0.5, fine_tune: null}\n", encoding="utf-8")
    code = textwrap.dedent(f"""
        import sys
        import slimkit
        r = slimkit.Recipe.load({str(recipe)!r})
        assert r.stages[0].sparsity == 0.5
        try:
            slimkit.compress({{"not": "a model"}}, r)
        except slimkit.UnsupportedModelError:
            pass
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in {FRAMEWORKS!r})
        print("LOADED", loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
