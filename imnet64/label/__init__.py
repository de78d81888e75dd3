"""Stage 1, `imnet64 label`.

Read images, run the teacher, write label parts and their status.
"""
