"""The cluster ring: which member owns a task key (rendezvous hashing), and which node a task id names.

The same function as the scheduler's (`task/src/ring.rs`): XXH3-64 of the key, mixed with XXH3-64 of each
member name by SplitMix64's finalizer; the highest score wins. Task ids carry the ordinal of the node that
assigned them in their top 16 bits.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from ._xxh3 import xxh3_64

_M64 = (1 << 64) - 1

#: Task ids hold their node's ordinal from this bit up.
TASK_ID_NODE_SHIFT = 48


def _score(key_hash: int, seed: int) -> int:
    z = key_hash ^ seed
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class Ring:
    """Members in ordinal order, as a node announces them in `Welcome.members` or a `Redirect`."""

    def __init__(self, members: Sequence[str]) -> None:
        self.members: List[str] = list(members)
        self._seeds = [xxh3_64(m.encode()) for m in self.members]
        self.epoch = (xxh3_64("\n".join(self.members).encode()) | 1) if self.members else 0

    def owner(self, key: str) -> Optional[str]:
        """The member that owns `key` (None for an empty ring)."""
        if not self.members:
            return None
        h = xxh3_64(key.encode())
        best = max(range(len(self._seeds)), key=lambda i: _score(h, self._seeds[i]))
        return self.members[best]

    def node_of_task(self, task_id: int) -> Optional[str]:
        """The member that assigned `task_id` (None when the id names no member of this ring)."""
        i = task_id >> TASK_ID_NODE_SHIFT
        return self.members[i] if i < len(self.members) else None
