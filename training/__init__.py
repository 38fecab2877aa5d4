"""mer-live training side: dataset readers, synthetic micro-expressions, training, LOSO evaluation.

Above :mod:`realtime`: face alignment and dynamic images come from :mod:`mer_core`, face tracking, motion and
spotting from :mod:`realtime`; nothing here reimplements them.
"""
