"""`imnet64 doctor`: what a job will see and use here, and what would make it fail.

Run it on a login node, inside `srun`/`sbatch`, or in the container, before burning an
allocation. It reads what imnet64 itself reads (the launcher's variables: Slurm, OpenMPI,
PMI/PMIx, horovodrun; the GPUs; Horovod's build; TensorFlow; the teacher; the output
folder) and reports each mismatch that would make a job hang or fail as one line in
`Report.problems`. Things worth knowing that do not fail a job are `Report.notes`.

Nothing here downloads anything: a TF Hub teacher is looked up in the cache only (and the
network is probed with a 3 s TCP connect when it is not cached). TensorFlow and Horovod are
imported unless `quick`; `probe` also starts Horovod in a child process (hvd.init(), as
`imnet64 train` does) and compares the world it joins with the launcher's.

One module per section, each filling its part of the report (report.py): launcher, gpus,
frameworks (Horovod, TensorFlow), teacher, disk (the output folder), probes (the checks made
by trying); checkup.diagnose puts them together. The launcher's variables are read by
imnet64.cluster.launcher_layout, never here (tests/test_layering.py).
"""

from imnet64.cluster.launcher_layout import Launcher, expand_hostlist, tasks_per_node
from imnet64.pipeline.doctor.checkup import diagnose
from imnet64.pipeline.doctor.disk import (
    DATASET_RECORD_OVERHEAD,
    DEFAULT_IMAGE_BYTES,
    DEFAULT_SHARD_MIB,
    DISK_MARGIN,
    FILES_PER_LABEL_SHARD,
    LABEL_CSV_ROW,
    LABEL_RECORD_OVERHEAD,
    RAW_IMAGE_BYTES,
    STAGES,
    check_disk,
    estimate_bytes_per_image,
    size_text,
)
from imnet64.pipeline.doctor.frameworks import (
    PROBE_CODE,
    PROBE_TIMEOUT_S,
    auto_precision,
    installed_engines,
    probe_horovod,
    read_horovod,
    read_tensorflow,
)
from imnet64.pipeline.doctor.gpus import gpu_problems, parse_gpus, read_gpus
from imnet64.pipeline.doctor.launcher import launcher_problems, read_launcher
from imnet64.pipeline.doctor.report import (
    DiskCheck,
    Gpus,
    HorovodBuild,
    Report,
    TeacherCheck,
    TensorFlowInfo,
)
from imnet64.pipeline.doctor.teacher import NETWORK_TIMEOUT_S, check_teacher, tfhub_cache_dir

__all__ = [
    "DATASET_RECORD_OVERHEAD", "DEFAULT_IMAGE_BYTES", "DEFAULT_SHARD_MIB", "DISK_MARGIN",
    "FILES_PER_LABEL_SHARD", "LABEL_CSV_ROW", "LABEL_RECORD_OVERHEAD", "NETWORK_TIMEOUT_S",
    "PROBE_CODE", "PROBE_TIMEOUT_S", "RAW_IMAGE_BYTES", "STAGES",
    "DiskCheck", "Gpus", "HorovodBuild", "Launcher", "Report", "TeacherCheck", "TensorFlowInfo",
    "auto_precision", "check_disk", "check_teacher", "diagnose", "estimate_bytes_per_image",
    "expand_hostlist", "gpu_problems", "installed_engines", "launcher_problems", "parse_gpus",
    "probe_horovod", "read_gpus", "read_horovod", "read_launcher", "read_tensorflow",
    "size_text", "tasks_per_node", "tfhub_cache_dir",
]
