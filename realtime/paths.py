"""The user cache folder: the one place mer-live writes outside the paths a user names."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$MER_CACHE_DIR``, else ``$XDG_CACHE_HOME/mer-live``, else ``~/.cache/mer-live``."""
    env = os.environ.get("MER_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "mer-live"
