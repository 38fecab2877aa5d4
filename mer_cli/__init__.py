"""mer-live's commands, the top layer: argument parsing, one-line errors and exit codes.

``mer-live`` (:mod:`mer_cli.live`, which runs :mod:`mer_cli.live_run`), ``mer-analyze``, ``mer-subscribe``,
``mer-bench``, ``mer-synth``, ``mer-train``, ``mer-export``. Everything they do lives in the packages below;
nothing below imports from here.
"""
