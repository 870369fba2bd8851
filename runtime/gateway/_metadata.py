"""Ingress metadata normalisation and the request id.

Callers reach the gateway through proxies, load balancers and every gRPC library there is, so
the metadata a handler sees is first put into one shape:

* keys are lower-case (HTTP/2 requires it, but HTTP/1 bridges and hand-written clients do not);
* hop-by-hop headers, which describe one connection and must not travel further, are dropped,
  together with any header a ``connection`` header names and HTTP/2 pseudo-headers;
* ``x-forwarded-for`` is a single comma-separated chain ending in the address of the peer that
  connected to us, so a backend can see who really called;
* binary (``-bin``) values stay bytes; every other value is text.

    >>> md = normalise([("X-Request-Id", "abc"), ("Connection", "close")], peer="ipv4:10.0.0.7:5123")
    >>> md["x-request-id"], md["x-forwarded-for"], "connection" in md
    ('abc', '10.0.0.7', False)
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence

from runtime.lcc import is_valid_request_id, new_request_id
from runtime.status import REQUEST_ID_KEY

__all__ = [
    "HOP_BY_HOP",
    "REQUEST_ID_KEY",
    "Metadata",
    "is_valid_request_id",
    "normalise",
    "peer_ip",
    "request_id",
]

FORWARDED_FOR_KEY = "x-forwarded-for"

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Headers that belong to one connection (RFC 9110 §7.6.1) and are never forwarded.

``te: trailers`` is the one value gRPC itself relies on; it is kept so a request forwarded
as-is still says it accepts trailers. Every other ``te`` value is dropped.
"""


MetadataValue = str | bytes


class Metadata(Mapping[str, MetadataValue]):
    """Normalised, immutable call metadata.

    As a mapping it gives the first value of each key; :meth:`get_all` gives every value and
    :attr:`pairs` the whole sequence in order, ready to forward as gRPC metadata.
    """

    __slots__ = ("_first", "pairs")

    def __init__(self, pairs: Sequence[tuple[str, MetadataValue]]) -> None:
        self.pairs: tuple[tuple[str, MetadataValue], ...] = tuple(pairs)
        first: dict[str, MetadataValue] = {}
        for key, value in self.pairs:
            first.setdefault(key, value)
        self._first = first

    def __getitem__(self, key: str) -> MetadataValue:
        return self._first[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __repr__(self) -> str:
        return f"Metadata({self.pairs!r})"

    def get_all(self, key: str) -> tuple[MetadataValue, ...]:
        """Every value of ``key``, in the order received."""
        return tuple(value for k, value in self.pairs if k == key)

    def text(self, key: str) -> str | None:
        """The first value of ``key`` when it is text; ``None`` when absent or binary."""
        value = self._first.get(key)
        return value if isinstance(value, str) else None


@functools.lru_cache(maxsize=1024)
def peer_ip(peer: str) -> str | None:
    """The IP address in a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), if any.

    Remembered per peer string: a gateway sees the same few connections call after call.
    """
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        host, _, _port = rest.rpartition(":")
        return host or None
    if kind == "ipv6":
        if rest.startswith("[") and "]" in rest:
            return rest[1 : rest.index("]")] or None
        host, _, _port = rest.rpartition(":")
        return host or None
    return None


def _connection_tokens(pairs: Sequence[tuple[str, MetadataValue]]) -> set[str]:
    """Header names listed in ``connection`` headers: these are hop-by-hop too."""
    tokens: set[str] = set()
    for key, value in pairs:
        if key.lower() == "connection" and isinstance(value, str):
            tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
    return tokens


def normalise(metadata: Sequence[tuple[str, str | bytes]], *, peer: str) -> Metadata:
    """Normalise incoming call metadata; ``peer`` is the gRPC peer string of the connection."""
    drop = HOP_BY_HOP | _connection_tokens(metadata)
    pairs: list[tuple[str, MetadataValue]] = []
    forwarded: list[str] = []
    for raw_key, raw_value in metadata:
        key = raw_key.lower()
        if key.startswith(":"):
            continue
        binary = key.endswith("-bin")
        if binary:
            value: MetadataValue = raw_value if isinstance(raw_value, bytes) else raw_value.encode("latin-1")
        else:
            value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else raw_value
        if key in drop and not (key == "te" and isinstance(value, str) and value.strip().lower() == "trailers"):
            continue
        if key == FORWARDED_FOR_KEY:
            assert isinstance(value, str)
            forwarded.extend(hop.strip() for hop in value.split(",") if hop.strip())
            continue
        pairs.append((key, value))
    ip = peer_ip(peer)
    if ip is not None:
        forwarded.append(ip)
    if forwarded:
        pairs.append((FORWARDED_FOR_KEY, ", ".join(forwarded)))
    return Metadata(pairs)


def request_id(metadata: Mapping[str, MetadataValue]) -> str:
    """The caller's ``x-request-id`` when well formed, otherwise a fresh unique id.

    A malformed id is replaced rather than refused: the id exists to correlate logs, and a
    caller should not fail because its proxy wrote something odd there.
    """
    value = metadata.get(REQUEST_ID_KEY)
    if isinstance(value, str) and is_valid_request_id(value):
        return value
    return new_request_id()
