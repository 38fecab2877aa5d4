"""mer-live's analysis floor: what one frame after another becomes, the same live and offline.

Motion (:mod:`mer_analysis.motion`), the rule spotter (:mod:`mer_analysis.spotting`) and the learned one
(:mod:`mer_analysis.learned_spotting`, over :mod:`mer_analysis.spot_features`), and the chain that joins them
and builds each window's dynamic images (:mod:`mer_analysis.chain`). Plain computation: no threads, sockets or
clocks. Above :mod:`engines` and :mod:`mer_core`, below :mod:`realtime`, which drives it from its threads;
the face stage comes in through a Protocol, so the MediaPipe tracker stays with the live runtime.
"""
