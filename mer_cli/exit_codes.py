"""The exit codes the commands share (``mer-export`` adds its own for a failed verification)."""

from __future__ import annotations

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected internal error
EXIT_USAGE = 2  # a user error (:class:`mer_core.errors.UserError`): one line, no traceback
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM
