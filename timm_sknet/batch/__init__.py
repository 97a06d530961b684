"""Bulk inference over many images: which files (:mod:`.finding`), decoding and the model per batch
(:mod:`.predictor`, shared with Ray Data), the output files and resume (:mod:`.output`), and the run (:mod:`.run`).
"""
