"""Ctrl-C while typer builds or parses the command is exit 130 without a traceback
(``typer._click.exceptions`` has no ``Abort``: naming it turned the interrupt into an
AttributeError traceback, exit 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

INTERRUPT_AT = {
    "build": "import typer.main as t; t.get_command = boom",
    "run": "import ledger.cli as c2; c2.app.__class__.__call__ = boom",
}


@pytest.mark.parametrize("where", sorted(INTERRUPT_AT))
def test_ctrl_c_during_start_up_is_130_without_a_traceback(where):
    code = (
        "import ledger.cli as c\n"
        "def boom(*a, **k):\n    raise KeyboardInterrupt()\n"
        f"{INTERRUPT_AT[where]}\n"
        "c.main(['verify', 'x'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 130, run.stderr
    assert "Traceback" not in run.stderr and "AttributeError" not in run.stderr, run.stderr
