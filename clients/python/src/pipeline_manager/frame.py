"""Frames: a 4-byte big-endian length, then one protobuf `Envelope` of that many bytes. A pure codec, no I/O.

The length is checked against the limit before anything is buffered for the body, as the server does."""

from __future__ import annotations

import struct
from typing import List, Optional

from . import pm_pb2 as pb
from .errors import ProtocolError

_LEN = struct.Struct(">I")


def encode(env: pb.Envelope) -> bytes:
    """One frame holding `env`."""
    body = env.SerializeToString()
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into envelopes. Feed it what the socket returns; take whole envelopes out."""

    def __init__(self, max_frame: int = 64 * 1024 * 1024) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[pb.Envelope]:
        """Adds `data`; returns every envelope now complete (possibly none)."""
        self._buf += data
        out: List[pb.Envelope] = []
        while True:
            env = self._next()
            if env is None:
                return out
            out.append(env)

    def _next(self) -> Optional[pb.Envelope]:
        if len(self._buf) < 4:
            return None
        (n,) = _LEN.unpack_from(self._buf)
        if n > self.max_frame:
            raise ProtocolError(f"frame of {n} bytes exceeds the limit of {self.max_frame} bytes")
        if len(self._buf) < 4 + n:
            return None
        env = pb.Envelope()
        try:
            env.ParseFromString(bytes(self._buf[4 : 4 + n]))
        except Exception as e:  # protobuf's DecodeError
            raise ProtocolError(f"malformed frame: {e}") from e
        del self._buf[: 4 + n]
        return env
