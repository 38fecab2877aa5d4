"""The base of every error a user can fix (bad input, missing files, busy ports).

Library code raises subclasses with a message that says what is wrong and what to do; the command-line
edges (:mod:`mer_cli`) print that one line and exit with their usage exit code, never a traceback.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Something the user can fix; the message says what and how."""
