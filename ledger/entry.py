"""The ``ledger`` console script: ledger.cli behind a guard that covers its own import.

Importing the CLI (typer, rich) takes a noticeable fraction of a second; a Ctrl-C in
that window must exit 130 like a Ctrl-C anywhere else, not print a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
