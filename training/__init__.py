"""mer-live training side: dataset readers, synthetic micro-expressions, training, LOSO evaluation, metrics.

Face alignment and dynamic images come from :mod:`realtime`; nothing here reimplements them.
"""
