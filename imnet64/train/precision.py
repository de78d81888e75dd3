"""`train --precision auto` resolved once per run: on a new run rank 0 asks the hardware
(imnet64.cluster.precision), on a resume it keeps what the run's config.json recorded, and
every rank gets rank 0's answer (ranks on different nodes must compute alike). The
resolved value is what config.json records, so a resume with an explicit other precision
is refused like any other changed option."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from imnet64 import atomic
from imnet64.cluster.precision import AUTO, PrecisionChoice, choose
from imnet64.cluster.world import World
from imnet64.train.config import PRECISIONS, TrainConfig
from imnet64.train.run_dir import CONFIG

WHY_KEY = "precision_choice"  # config.json: the resolved precision's reason


def _recorded(run_dir: Path) -> tuple[str, str] | None:
    """(precision, why) of the run being resumed in run_dir, if its config.json says."""
    try:
        old = atomic.read_json(run_dir / CONFIG)
    except (OSError, ValueError):  # none (a new run) or damaged: run_dir.prepare_run_dir names it
        return None
    if not isinstance(old, dict) or old.get("precision") not in PRECISIONS:
        return None
    return old["precision"], str(old.get(WHY_KEY) or "as recorded")


def chief_choice(cfg: TrainConfig) -> PrecisionChoice:
    if cfg.precision == AUTO:
        recorded = _recorded(Path(cfg.run_dir))
        if recorded is not None:
            precision, why = recorded
            return PrecisionChoice(precision, AUTO, f"auto: kept from the run's config.json, "
                                                    f"where it was {why}")
    return choose(cfg.precision)


def resolve_precision(cfg: TrainConfig, world: World) -> tuple[TrainConfig, PrecisionChoice]:
    """`cfg` with its precision resolved (the same on every rank), and why."""
    chosen = chief_choice(cfg) if world.is_chief else None
    precision, requested, why = world.broadcast_object(
        (chosen.precision, chosen.requested, chosen.why) if chosen else None, name="precision")
    return dataclasses.replace(cfg, precision=precision), PrecisionChoice(precision, requested,
                                                                           why)
