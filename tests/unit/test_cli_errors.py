"""Every error the CLI prints is one line; a library's own error comes after a sentence of ours
naming the stage, never as the last line on its own."""

from __future__ import annotations

import argparse

from rich.console import Console

from flows.cli import _fail
from trustflow.errors import DataValidationError


def _printed(exc: BaseException, stage: str | None, debug: bool = False) -> str:
    console = Console(record=True, width=100, force_terminal=False)
    args = argparse.Namespace(debug=debug, json=False)
    assert _fail(console, args, exc, stage) == 1
    return console.export_text()


def test_a_library_error_is_one_line_that_names_the_stage() -> None:
    raw = ValueError("Input X contains NaN.\nLogisticRegression does not accept missing values")
    text = _printed(raw, "explain")
    assert text.count("\n") == 1, text  # one line, however wide the terminal
    assert text.startswith("error: the explain stage failed: ValueError: Input X contains NaN.")
    assert "LogisticRegression does not accept" not in text
    assert text.rstrip().endswith("(run again with --debug for the traceback)")


def test_our_own_errors_are_printed_as_they_are() -> None:
    text = _printed(DataValidationError("a.csv: column 'age' has -5 (row 3)"), "validate")
    assert text == "error: a.csv: column 'age' has -5 (row 3)\n"
