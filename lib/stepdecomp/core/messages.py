"""Messages about the user's files: every one names the file (and the line where there is
one) and stays short whatever the file holds.

A value taken from a file is shown through :func:`shown` (a bounded repr: a 470-byte YAML
alias bomb expands to a structure whose full repr is hundreds of megabytes), and a whole
message through :func:`bounded`.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

#: Longest message (warning or error text) about a user's file, in characters.
MAX_MESSAGE_CHARS = 400
#: Longest rendering of one value taken from a file, in characters.
SHOWN_VALUE_CHARS = 40
#: Ellipsis that marks a cut.
CUT = "…"
LOG10_2 = math.log10(2)

def shown(value: Any, limit: int = SHOWN_VALUE_CHARS) -> str:
    """repr of a value read from a file, at most ``limit`` characters (cut with …).

    Nested containers are shown two levels deep and four items wide, so the cost does
    not depend on the value's size.

    >>> shown("x" * 100)
    "'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx'"
    >>> shown([[1, [2, [3]]]] * 9)
    '[[1, [...]], [1, [...]], [1, [...]], […]'
    """
    r = reprlib.Repr()
    r.maxlevel = 2
    r.maxstring = r.maxother = r.maxlong = limit
    r.maxtuple = r.maxlist = r.maxarray = r.maxdict = r.maxset = r.maxfrozenset = 4
    r.maxdeque = 4
    try:
        text = r.repr(value)
    except ValueError:              # an int beyond sys.get_int_max_str_digits()
        text = f"<an int of about {int(abs(value).bit_length() * LOG10_2) + 1} digits>"
    return text if len(text) <= limit else text[: limit - 2] + CUT + text[-1]


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters (the start, where the file is named, kept)."""
    return message if len(message) <= limit else message[: limit - 1] + CUT
