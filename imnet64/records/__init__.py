"""Stage 2, `imnet64 shard-records`.

Read label output, split it, write TFRecord shards and the manifest.
"""
