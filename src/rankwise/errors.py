"""The one exception type users see: a bad input, explained in one line."""

from __future__ import annotations


class RankwiseError(Exception):
    """A problem with the user's input or environment.

    The message is a single line saying what is wrong and how to fix it. The CLI prints it
    as ``rankwise: error: <message>`` and exits with code 2.
    """

    exit_code = 2
