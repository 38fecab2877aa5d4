"""mer-live's live runtime: sources, capture, ring buffer, face tracking, the threaded pipeline and classifier
worker, publisher, subscriber, dashboard. Above :mod:`mer_analysis` (motion, spotting, the analysis chain it
drives), below :mod:`mer_offline` (mer-analyze, mer-bench's measurements).

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
