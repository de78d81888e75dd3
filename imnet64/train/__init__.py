"""Stage 3, `imnet64 train`/`evaluate`/`export`.

Model, schedule, input pipeline, loop, checkpoints, history.
"""
