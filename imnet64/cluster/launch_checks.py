"""What in the launch environment would make a job fail or hang, cheaply (`imnet64 doctor`):
rank and shard variables that are not numbers, an IMNET64_ENGINE slurm/train.sh refuses,
and a TF_CONFIG whose cluster this process cannot join.

TF_CONFIG is checked without waiting for anyone: it must be JSON with a cluster and this
task in it; this task's own entry must be host:port on this machine with the port free; and
each other worker must answer a TCP connect within PEER_PROBE_S now (a worker that never
starts makes `train --engine tf` wait for it: issue 24).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from concurrent.futures import ThreadPoolExecutor

from imnet64.cluster.engines import check_engine
from imnet64.cluster.environment import ENGINE_VAR, Environment, malformed_message
from imnet64.errors import UserError

PEER_PROBE_S = 1.0
MAX_PEERS_PROBED = 64
_HOST_PORT = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^:\s]+):(?P<port>[0-9]{1,5})")


def environment_problems(environment: Environment) -> list[str]:
    problems = [malformed_message(name, value)
                for name, value in environment.malformed().items()]
    if environment.engine is not None:
        try:
            check_engine(ENGINE_VAR, environment.engine)
        except UserError as e:
            problems.append(f"{e} (slurm/train.sh would stop at once)")
    if environment.tf_config is not None:
        problems += tf_config_problems(environment.tf_config)
    return problems


def _local_addresses() -> set[str]:
    names = {"localhost", "127.0.0.1", "::1", "0.0.0.0", socket.gethostname(),
             socket.getfqdn()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return {n.lower() for n in names}


def _is_this_machine(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _local_addresses() or host.startswith("127."):
        return True
    try:
        return socket.gethostbyname(host) in _local_addresses() | {"127.0.0.1"} or \
            socket.gethostbyname(host).startswith("127.")
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((host.strip("[]") if family == socket.AF_INET6 else "", port))
        except OSError:
            return False
    return True


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=PEER_PROBE_S):
            return True
    except OSError:
        return False


def tf_config_problems(text: str) -> list[str]:
    """What makes this TF_CONFIG unjoinable from here (each one line)."""
    try:
        config = json.loads(text)
    except ValueError as e:
        return [f"TF_CONFIG is not JSON ({e}): `train --engine tf` cannot read its cluster"]
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) \
            or not isinstance(config.get("task"), dict):
        return ["TF_CONFIG is not an object with 'cluster' and 'task' objects"]
    cluster, task = config["cluster"], config["task"]
    kind, index = task.get("type"), task.get("index", 0)
    entries = cluster.get(kind)
    if not isinstance(entries, list) or not entries:
        return [f"TF_CONFIG: task type {kind!r} has no entry in the cluster ({sorted(cluster)})"]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(entries):
        return [f"TF_CONFIG: task index {index!r} is not one of the {len(entries)} {kind} "
                "entries"]
    problems: list[str] = []
    addresses: dict[tuple[str, int], str] = {}
    for role, members in cluster.items():
        for i, entry in enumerate(members if isinstance(members, list) else [members]):
            m = _HOST_PORT.fullmatch(str(entry))
            if not m or not 0 < int(m.group("port")) < 65536:
                problems.append(f"TF_CONFIG: {role} {i} {entry!r} is not host:port")
                continue
            addresses[(m.group("host"), int(m.group("port")))] = f"{role} {i}"
    if problems:
        return problems
    own_entry = str(entries[index])
    own = _HOST_PORT.fullmatch(own_entry)
    host, port = own.group("host"), int(own.group("port"))
    if not _is_this_machine(host):
        return [f"TF_CONFIG: this task ({kind} {index}) is {own_entry!r}, but its own entry "
                f"names host {host!r}, not this machine: it cannot listen there"]
    if not _port_free(host, port):
        problems.append(f"TF_CONFIG: this task ({kind} {index}, {own_entry}): its own port "
                        f"{port} is in use on this machine")
    peers = [(h, p, name) for (h, p), name in addresses.items()
             if (h, p) != (host, port)][:MAX_PEERS_PROBED]
    with ThreadPoolExecutor(max_workers=min(16, len(peers) or 1)) as pool:
        answered = list(pool.map(lambda peer: _answers(peer[0], peer[1]), peers))
    for (h, p, name), ok in zip(peers, answered):
        if not ok:
            problems.append(f"TF_CONFIG: {name} ({h}:{p}) does not answer now: "
                            "`train --engine tf` waits for every worker it names; start it "
                            "too, or unset TF_CONFIG")
    return problems
