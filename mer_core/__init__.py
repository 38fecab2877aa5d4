"""mer-live's lowest layer: what every other package shares and nothing of ours is imported by.

The user cache (:mod:`mer_core.paths`), face alignment (:mod:`mer_core.alignment`), dynamic images
(:mod:`mer_core.dynamic_image`), the ``mer/1`` records (:mod:`mer_core.events`) and the evaluation metrics
(:mod:`mer_core.metrics`), the base of user errors (:mod:`mer_core.errors`). The layers, bottom up:
``mer_core`` → ``engines`` → ``mer_analysis`` → ``realtime`` → ``mer_offline`` → ``training`` → ``mer_cli``; a
package imports only from those below it (``lint-imports`` checks it, see ``pyproject.toml``).
"""
