"""Shared fixtures: quiet frameworks, and one builder per framework for parametrized tests."""

from __future__ import annotations

import os

# Keep TensorFlow's C++ logging and oneDNN notices out of test output; set before any import of it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
