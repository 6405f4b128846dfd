"""``python -m slimkit``: the ``slimkit`` command (see :mod:`slimkit.cli`)."""

from slimkit.cli import main

if __name__ == "__main__":
    main()
