"""mer-live training side: dataset readers, synthetic micro-expressions, training, LOSO evaluation.

Above :mod:`mer_offline`: face alignment and dynamic images come from :mod:`mer_core`, motion and spotting
from :mod:`mer_analysis`, face tracking from :mod:`realtime`; nothing here reimplements them.
"""
