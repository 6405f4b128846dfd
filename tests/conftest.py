"""Shared fixtures: quiet frameworks, and the ``framework`` fixture over every declared adapter."""

from __future__ import annotations

import os

# Keep TensorFlow's C++ logging and oneDNN notices out of test output; set before any import of it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The fuzz suite's big budget, run by hand: `pytest -m fuzz --hypothesis-profile=long` (README). Recipe
# loads take the profile's example count, compress examples a tenth of it (300 per framework).
settings.register_profile("long", max_examples=3000, deadline=None)

from frameworks import FRAMEWORKS, NAMES, Framework  # noqa: E402


@pytest.fixture(params=FRAMEWORKS, ids=NAMES)
def framework(request) -> Framework:
    """One adapter under test (``tests/frameworks.py``), registered with slimkit while the test runs.

    Contract tests take it as is (ids ``[fake]``, ``[keras]``, ``[torch]``); a test that needs a
    capability some adapters lack narrows it with ``pytest.mark.parametrize("framework",
    frameworks.having(flag), ids=str, indirect=True)``.
    """
    fw = request.param
    with fw.registered():
        yield fw


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Contract tests that show a known adapter bug (``Framework.known_bugs``) run as strict xfails."""
    for item in items:
        fw = getattr(getattr(item, "callspec", None), "params", {}).get("framework")
        reason = fw.known_bugs.get(item.originalname) if isinstance(fw, Framework) else None
        if reason:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
