"""mer-live real-time side: sources, capture, ring buffer, face tracking, motion, spotting, the live pipeline,
publisher, subscriber, dashboard, offline analysis. Above :mod:`engines` and :mod:`mer_core`, below :mod:`training`.

Nothing heavy is imported here: ``import realtime`` must stay cheap (no torch, no mediapipe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["subscribe"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from realtime.subscriber import subscribe


def __getattr__(name: str) -> Any:
    # Lazy: the subscriber pulls in pyzmq, which users of the DI code do not need.
    if name == "subscribe":
        from realtime.subscriber import subscribe

        return subscribe
    raise AttributeError(name)
