"""Moved to imnet64.formats.label_status (both stages read it). Kept only until
pipeline/demo.py and cluster/slurm_submit.py import it from there; then delete this file."""

from imnet64.formats.label_status import LabelStatus, ShardState, label_status

__all__ = ["LabelStatus", "ShardState", "label_status"]
