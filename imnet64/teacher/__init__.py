"""The pretrained teacher that labels the images: load_teacher(spec) -> Teacher.

Importing this package imports TensorFlow; `imnet64.teacher.offline` and
`imnet64.teacher.hub` can be imported on their own.
"""

from imnet64.teacher.loading import (
    DEFAULT_HANDLE,
    OFFLINE_SPEC,
    Teacher,
    load_teacher,
)

__all__ = ["DEFAULT_HANDLE", "OFFLINE_SPEC", "Teacher", "load_teacher"]
