"""Connection settings shared by producers and workers: server addresses, TLS and tokens."""

from __future__ import annotations

import os
import ssl
from typing import List, Optional, Sequence, Tuple, Union

#: What `tls=` takes: None or False (plain TCP), True (TLS verified against the system's CAs), the path of a
#: PEM file of CA certificates to trust, or a ready `ssl.SSLContext` (e.g. with a client certificate for
#: mutual TLS).
TlsArg = Union[None, bool, str, "os.PathLike[str]", ssl.SSLContext]

#: The protocol version this client speaks.
PROTOCOL_VERSION = 1


def ssl_context(tls: TlsArg) -> Optional[ssl.SSLContext]:
    """The SSL context for a `tls=` argument (None: plain TCP)."""
    if tls is None or tls is False:
        return None
    if isinstance(tls, ssl.SSLContext):
        return tls
    if tls is True:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=os.fspath(tls))


def split_addr(addr: str) -> Tuple[str, int]:
    """`host:port` (or `[v6]:port`) as a (host, port) pair."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{addr!r} is not an address like 127.0.0.1:7070")
    return host.strip("[]"), int(port)


def server_list(servers: Union[str, Sequence[str]]) -> List[str]:
    """A list of addresses from one address, a comma-separated list, or a sequence."""
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",")]
    out = [s for s in servers if s]
    if not out:
        raise ValueError("no server address given")
    for s in out:
        split_addr(s)
    return out
