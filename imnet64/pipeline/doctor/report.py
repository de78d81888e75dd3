"""What `imnet64 doctor` found, section by section: the dataclasses every section fills and
the CLI shows (`--json` dumps them as they are)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from imnet64.cluster.launcher_layout import Launcher


@dataclass
class Gpus:
    cuda_visible_devices: str | None
    visible: int | None  # CUDA_VISIBLE_DEVICES' count, else nvidia-smi's (None: unknown)
    nvidia_smi: int | None  # GPUs nvidia-smi lists (None: no nvidia-smi)
    tensorflow: int | None  # GPUs TensorFlow lists (None: not asked)
    granted: int | None  # GPUs Slurm granted on this node
    expected: int | None  # --gpus N (None: not given; -1: all)
    per_task: bool  # Slurm binds GPUs per task (--gpus-per-task)
    slurm: dict[str, str] = field(default_factory=dict)


@dataclass
class HorovodBuild:
    version: str | None
    imported: bool
    mpi: bool | None = None
    gloo: bool | None = None
    nccl: bool | None = None
    controller: str | None = None  # the one hvd.init() would use here
    controller_why: str = ""
    error: str | None = None
    probe: dict[str, Any] | None = None  # hvd.init() in a child: rank, size, ... or error


@dataclass
class TensorFlowInfo:
    version: str | None
    imported: bool
    built_with_cuda: bool | None = None
    onednn: bool | None = None
    onednn_why: str = ""
    xla: str = ""
    error: str | None = None
    machine: str = ""  # imnet64.cluster.machine's line: CPU, vector extensions, cores, memory
    precision: str = ""  # what --precision auto picks here, and why (auto_precision)


@dataclass
class TeacherCheck:
    spec: str
    kind: str  # "offline", "tfhub", "folder"
    path: str | None
    cache_dir: str | None  # TF Hub cache (tfhub) or IMNET64_HOME (offline)
    present: bool
    sha256: str | None
    note: str = ""


@dataclass
class DiskCheck:
    folder: str
    measured_at: str  # the nearest existing folder (statvfs)
    free_bytes: int
    free_inodes: int | None  # None: the file system does not say
    stage: str
    images: int | None
    bytes_per_image: int | None
    needed_bytes: int | None
    needed_inodes: int | None
    estimate: str = ""


@dataclass
class Report:
    launcher: Launcher
    gpus: Gpus
    horovod: HorovodBuild
    tensorflow: TensorFlowInfo
    teacher: TeacherCheck | None
    disk: DiskCheck | None
    provenance: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)  # what `train --engine` can use here

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}
