"""``python -m ledger.cli``: the console script."""

from . import main

main()
