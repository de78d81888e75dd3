"""The frozen teacher of `--targets online`: by default the one that labeled the dataset (its
handle or path, from the dataset's provenance), or `--teacher SPEC`. Each rank loads its own
copy; it is never trained and never checkpointed, so config.json records which teacher it
was (spec, local path, weights' sha256) and a resume with other weights is refused."""

from __future__ import annotations

from dataclasses import dataclass

from imnet64.errors import UserError
from imnet64.formats import provenance as provenance_schema
from imnet64.formats.manifest import Manifest
from imnet64.teacher.loading import Teacher, load_teacher
from imnet64.train.targets import kept_teacher_ids


@dataclass(frozen=True)
class OnlineTeacher:
    teacher: Teacher
    teacher_ids: tuple[int, ...]  # the teacher's class of each kept class
    spec: str  # as given (or as the dataset names it)
    sha256: str | None

    def to_json(self) -> dict:
        return {"spec": self.spec, "name": self.teacher.name, "path": str(self.teacher.path),
                "sha256": self.sha256}


def teacher_spec(spec: str | None, manifest: Manifest) -> str:
    """`spec`, else the teacher that labeled the dataset."""
    labeled_by = provenance_schema.teacher_fields(manifest.raw)["teacher"]
    if spec or labeled_by:
        return spec or labeled_by
    raise UserError(f"dataset {manifest.root} does not say which teacher labeled it: name the "
                    "online teacher with --teacher SPEC")


def load_online_teacher(spec: str | None, manifest: Manifest) -> OnlineTeacher:
    spec = teacher_spec(spec, manifest)
    ids = kept_teacher_ids(manifest)  # refused before the teacher loads
    teacher = load_teacher(spec)
    return OnlineTeacher(teacher, ids, spec, teacher.weights_sha256())
