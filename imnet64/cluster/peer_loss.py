"""A tf.distribute peer lost mid-run, said in one line (issue 24, round 3, item 5).

When a worker of a MultiWorkerMirroredStrategy run dies (kill -9, the OOM killer, its node
lost) under a launcher that is not ours (srun, mpirun, TF_CONFIG by hand), the survivors'
next collective fails in TensorFlow's words: an UnavailableError (or Cancelled/Aborted/
Internal) of many lines, "Collective ops is aborted by: Connection reset by peer", a gRPC
JSON blob and a Python traceback. `as_peer_lost` turns such an error into one line naming
the peer (its task index and address, when TensorFlow says them) and what to do; the run's
status.json then says "failed" with that line. Measured here (2 tf workers on one host,
TF 2.18.1): the survivor's collective failed 2.4 s after kill -9 of its peer, whichever
rank was killed.
"""

from __future__ import annotations

import re

from imnet64.errors import UserError

# what TensorFlow's collective and gRPC errors say when the other end is gone
_MARKERS = ("Collective ops is aborted", "remote target /job:", "Connection reset by peer",
            "Socket closed", "failed to connect to all addresses", "Connection refused",
            "heartbeat timeout", "CoordinationService/Heartbeat")
_TASK = re.compile(r"/job:\w+/(?:replica:\d+/)?task:(\d+)")
_ADDRESS = re.compile(r"Error received from peer (ipv[46]:[^\s\",]+)")
# (what TensorFlow says, what the line says), first match wins
_REASONS = (("heartbeat timeout", "no heartbeat from it within TensorFlow's coordination "
             "timeout"),
            ("CoordinationService/Heartbeat", "this rank's heartbeat to the coordination "
             "service (on rank 0) timed out"),
            ("Connection reset by peer", "connection reset by peer"),
            ("Socket closed", "socket closed"),
            ("Connection refused", "connection refused"),
            ("failed to connect to all addresses", "cannot connect to it"))


class PeerLost(UserError):
    """A peer rank is gone: this rank cannot go on (not bad input: exit 1, as a crash)."""

    exit_code = 1


def as_peer_lost(error: BaseException, rank: int, size: int) -> PeerLost | None:
    """The one-line error for `error` if it says a peer of this rank is gone, else None."""
    if size < 2 or isinstance(error, UserError):
        return None
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover  (the tf engine always has it)
        return None
    if not isinstance(error, tf.errors.OpError):
        return None
    text = str(error)
    if not any(marker in text for marker in _MARKERS):
        return None
    peers = [int(t) for t in _TASK.findall(text) if int(t) != rank]
    if peers:
        who = f"rank {peers[0]}"
    elif "CoordinationService/Heartbeat" in text:
        who = "rank 0"  # the coordination service runs on worker 0
    else:
        who = "a peer rank"
    address = _ADDRESS.search(text)
    if address:
        who += f" ({address.group(1)})"
    why = next((said for marker, said in _REASONS if marker in text), type(error).__name__)
    return PeerLost(f"rank {rank} lost {who} mid-run: {why} (killed, out of memory, or its "
                    "node lost?); this rank stopped too: rerun the whole job to resume from "
                    "the last checkpoint")
