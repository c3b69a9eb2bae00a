"""The one error of the data stage (what on disk breaks which rule), and how a file that does not decode is named."""

from __future__ import annotations

import os
import re

EMPTY_FILE = "empty file (0 bytes)"
_BUFFER = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


class DatasetError(ValueError):
    """The data on disk breaks a layout rule; the message names the file/folder and the rule."""


def decode_problem(error: Exception, empty: bool, what: str = "") -> str:
    """Why a file did not decode, for the person fixing it: EMPTY_FILE rather than PIL's "cannot identify image
    file" for 0 bytes, and never PIL's name for bytes in memory (`<_io.BytesIO object at 0x...>`, an address)."""
    return EMPTY_FILE if empty else f"cannot decode{what} ({_BUFFER.sub('', str(error))})"


def is_empty_file(path: str) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False
