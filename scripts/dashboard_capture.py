#!/usr/bin/env python
"""Print the dashboard's text capture for docs/usage.md: the demo clip through the real pipeline.

    MER_FACE_MODEL=... python scripts/dashboard_capture.py [--model PATH] [--seconds 17] [--width 110]

Paste its output into docs/usage.md's capture; ``tests/test_dashboard_capture.py`` fails when they drift apart.
"""

from __future__ import annotations

import argparse
import sys

from training.demo import demo_dashboard


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model")
    p.add_argument("--seconds", type=float, default=17.0)
    p.add_argument("--width", type=int, default=110)
    args = p.parse_args()
    print(demo_dashboard(seconds=args.seconds, width=args.width, model=args.model), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
