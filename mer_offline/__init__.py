"""mer-live's offline floor: what runs over recorded videos rather than live.

``mer-analyze``'s analysis of one video (:mod:`mer_offline.analyze`), its batches of videos and worker
processes (:mod:`mer_offline.batch`), its HTML report (:mod:`mer_offline.report`), and the measurements
behind ``mer-bench`` (:mod:`mer_offline.bench`). Above :mod:`realtime`, whose pipeline it drives, below
:mod:`training`.
"""
