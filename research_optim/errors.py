"""Expected failures: what a user can fix — a bad value, a file in the way, a run already in progress.

The entry points print them as one or two lines without a traceback (``app.main``, ``worker.main``); any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """An expected failure whose message names the key or file and says what to do."""


class InputError(UserError, ValueError):
    """A data set, tokenizer or weights file that cannot be used as configured: names the key or file."""
