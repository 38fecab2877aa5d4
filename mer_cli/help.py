"""``--help`` of the training commands: every option's default shown, as the user would type it."""

from __future__ import annotations

import argparse

__all__ = ["DefaultsHelpFormatter"]


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its default, or there is
    nothing to show (no default, an off switch, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if "default" in help_text or default is None or default is False or default == [] \
                or default == argparse.SUPPRESS:
            return help_text
        return super()._get_help_string(action)
