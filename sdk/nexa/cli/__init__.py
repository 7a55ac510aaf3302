"""The ``nexa`` command line: ``nexa up``, job submission, ``nexa jobs``, keys, datasets, workers."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Run the ``nexa`` command (the console-script entry point)."""
    from nexa.cli.main import main as run

    run()
