"""mer-live's lowest layer: what every other package shares and nothing of ours is imported by.

The user cache (:mod:`mer_core.paths`), face alignment (:mod:`mer_core.alignment`), dynamic images
(:mod:`mer_core.dynamic_image`), the ``mer/1`` records (:mod:`mer_core.events`) and the evaluation metrics
(:mod:`mer_core.metrics`). The layers, bottom up: ``core`` → ``engines`` → ``realtime`` → ``training`` → ``cli``;
a package imports only from those below it (``lint-imports`` checks it, see ``pyproject.toml``).
"""
