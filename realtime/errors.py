"""Exit codes and the base of every error a user can fix (bad input, missing files, busy ports).

Library code raises subclasses with a message that says what is wrong and what to do; the command-line
edges print that one line and exit with :data:`EXIT_USAGE`, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Something the user can fix; the message says what and how."""
