"""The deployment layer: ONNX and onnxruntime, framework-neutral.

Exporting goes through each framework's own exporter (the model capability's ``export_onnx``); from
the float ONNX file on, everything is here: inserting Q/DQ with slimkit's parameters (qdq.py and its
parts), finding the plan's sites in the graph (mapping.py), running and verifying in onnxruntime
(runtime.py), inspecting what onnxruntime made of a model (inspect.py), latency and MACs (bench.py).

This is the one seam core reaches it through: the functions below import their module on first use,
since onnx and onnxruntime are an optional extra that ``import slimkit`` never needs. (They are named
``load_*``: importing a submodule sets the package attribute of its own name.)
"""

from __future__ import annotations

import importlib
from types import ModuleType


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"slimkit.deploy.{name}")


def load_runtime() -> ModuleType:
    """:mod:`slimkit.deploy.runtime`: run a file, count its zeros, write a QDQ file."""
    return _module("runtime")


def load_inspect() -> ModuleType:
    """:mod:`slimkit.deploy.inspect`: onnxruntime's optimized graph and the ops in it."""
    return _module("inspect")


def load_bench() -> ModuleType:
    """:mod:`slimkit.deploy.bench`: latency and MACs."""
    return _module("bench")
