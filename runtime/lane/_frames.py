"""The lane's wire format: length-framed frames, and the bodies of the ten frame kinds.

Every frame is a fixed 9-byte header, :data:`HEADER` = ``!IIB`` (body length, stream id, kind),
followed by exactly that many body bytes. Inside a body every variable field is length-prefixed,
so a decoder never has to search for a delimiter and never reads past the frame:

========  =====================================================================================
kind      body
========  =====================================================================================
REQUEST   ``!dHH`` (seconds left or -1 for no deadline, path length, pair count), the method
          path, the metadata pairs, then the payload (the rest of the body)
RESPONSE  ``!H`` (pair count), the response metadata pairs, then the payload (the rest)
STATUS    ``!BIH`` (status code number, details length, pair count), the details, the trailing
          metadata pairs; nothing after them
CANCEL    empty: the client gave up on that stream id
REFUSED   the reason, UTF-8: the server did not start the call (it is stopping), so the client
          may send it elsewhere whatever its idempotency, as HTTP/2's REFUSED_STREAM allows
OPEN      as REQUEST with no payload: starts a streaming call (client, server or bidirectional)
MESSAGE   one message of a stream, either way: the payload is the whole body
HALF      empty: the client sends no more messages on that stream (its half-close)
END       ``!H`` (pair count) and the trailing metadata pairs: the stream ended OK
WINDOW    ``!I``: the receiver grants the sender that many more bytes of messages on the stream
========  =====================================================================================

A stream ends with END or STATUS from the server, or CANCEL from the client; REFUSED answers an
OPEN the server did not start. Each side may send MESSAGE frames on a stream while it has
credit: :data:`STREAM_WINDOW` bytes to begin with, each message costing its length plus
:data:`MESSAGE_COST`, and a WINDOW frame granting more as the reader consumes them (once half a
window has been read). A sender waits at zero credit, so a reader that does not read holds up
the writer (and whatever produces its messages) and no more than a window and one message is
ever in flight per stream.

A metadata pair is ``!HBI`` (key length, value kind, value length), the UTF-8 key, then the
value: UTF-8 text for kind 0, raw bytes for kind 1, so a ``-bin`` value stays ``bytes`` and a
text value stays ``str`` on the other side.

:class:`FrameReader` cuts a byte stream into frames and never buffers a frame larger than its
cap: it reports the frame as :class:`Oversized` and skips its bytes as they arrive, so the
connection stays usable. A body that does not parse raises :class:`FrameError`.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "CANCEL",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "END",
    "HALF",
    "HEADER",
    "KINDS",
    "MESSAGE",
    "MESSAGE_COST",
    "METADATA_ALLOWANCE",
    "OPEN",
    "REFUSED",
    "REQUEST",
    "RESPONSE",
    "STATUS",
    "STREAM_WINDOW",
    "WINDOW",
    "Frame",
    "FrameError",
    "FrameReader",
    "Oversized",
    "Request",
    "Response",
    "Status",
    "decode_end",
    "decode_refused",
    "decode_request",
    "decode_response",
    "decode_status",
    "decode_window",
    "encode_cancel",
    "encode_end",
    "encode_half",
    "encode_message",
    "encode_open",
    "encode_refused",
    "encode_request",
    "encode_response",
    "encode_status",
    "encode_window",
    "too_large",
]

Pairs = tuple[tuple[str, str | bytes], ...]
PairsIn = Sequence[tuple[str, str | bytes]]

REQUEST = 1
RESPONSE = 2
STATUS = 3
CANCEL = 4
REFUSED = 5
OPEN = 6
MESSAGE = 7
HALF = 8
END = 9
WINDOW = 10
KINDS = frozenset((REQUEST, RESPONSE, STATUS, CANCEL, REFUSED, OPEN, MESSAGE, HALF, END, WINDOW))

STREAM_WINDOW = 64 * 1024
"""Bytes of messages either side may send on a stream before the reader grants more (HTTP/2's
default window)."""
MESSAGE_COST = 16
"""What a message costs in credit on top of its length, so that even empty messages are paced."""

HEADER = struct.Struct("!IIB")
"""(body length, stream id, kind) in front of every body."""
_REQUEST_HEAD = struct.Struct("!dHH")
_RESPONSE_HEAD = struct.Struct("!H")
_STATUS_HEAD = struct.Struct("!BIH")
_PAIR = struct.Struct("!HBI")
_WINDOW = struct.Struct("!I")
_TEXT, _BINARY = 0, 1
_NO_DEADLINE = -1.0
_MAX_BODY = 0xFFFFFFFF

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The largest payload either side accepts by default: grpc's default receive limit."""
METADATA_ALLOWANCE = 64 * 1024
"""Room in a frame for the method path and metadata on top of the payload; the frame cap is
``max_message_bytes + METADATA_ALLOWANCE``."""


class FrameError(ValueError):
    """Bytes that are not a well-formed lane frame: a bug, or a peer that does not speak the lane."""


class Frame(NamedTuple):
    """One whole frame as read: its body is still encoded."""

    stream_id: int
    kind: int
    body: bytes


class Oversized(NamedTuple):
    """A frame past the reader's cap; its body was skipped, never buffered."""

    stream_id: int
    kind: int
    length: int


class Request(NamedTuple):
    method: str
    metadata: Pairs
    timeout: float | None
    """Seconds the caller had left when it sent the request; None: no deadline."""
    payload: bytes


class Response(NamedTuple):
    metadata: Pairs
    payload: bytes


class Status(NamedTuple):
    """A call's non-OK end, as numbers and text; the client turns it into a ``grpc.Status``."""

    code: int
    details: str
    trailing_metadata: Pairs


def too_large(what: str, size: int, limit: int) -> str:
    """The RESOURCE_EXHAUSTED message for a frame or payload past its limit."""
    return f"lane {what} of {size} bytes is larger than the limit of {limit} bytes"


# -- encoding --------------------------------------------------------------------------------------


def _frame(stream_id: int, kind: int, parts: list[bytes]) -> bytes:
    """``parts[0]`` is a placeholder for the header; the rest is the body. One copy of the payload."""
    length = sum(map(len, parts))
    if length > _MAX_BODY:
        raise FrameError(too_large("frame", length, _MAX_BODY))
    parts[0] = HEADER.pack(length, stream_id, kind)
    return b"".join(parts)


def _add_pairs(parts: list[bytes], pairs: PairsIn) -> None:
    for key, value in pairs:
        k = key.encode()
        if isinstance(value, str):
            v = value.encode()
            parts += (_PAIR.pack(len(k), _TEXT, len(v)), k, v)
        else:
            parts += (_PAIR.pack(len(k), _BINARY, len(value)), k, value)


def encode_request(
    stream_id: int, method: str, metadata: PairsIn, timeout: float | None, payload: bytes
) -> bytes:
    """A whole REQUEST frame. ``timeout``: seconds left before the caller's deadline, or None."""
    path = method.encode()
    seconds = _NO_DEADLINE if timeout is None else max(0.0, timeout)
    try:
        parts = [b"", _REQUEST_HEAD.pack(seconds, len(path), len(metadata)), path]
        _add_pairs(parts, metadata)
    except (struct.error, TypeError, UnicodeEncodeError) as exc:  # a field too long, or not text/bytes
        raise FrameError(f"request cannot be framed: {exc}") from exc
    parts.append(payload)
    return _frame(stream_id, REQUEST, parts)


def encode_response(stream_id: int, metadata: PairsIn, payload: bytes) -> bytes:
    """A whole RESPONSE frame: the call ended OK with ``payload``."""
    try:
        parts = [b"", _RESPONSE_HEAD.pack(len(metadata))]
        _add_pairs(parts, metadata)
    except (struct.error, TypeError, UnicodeEncodeError) as exc:  # a field too long, or not text/bytes
        raise FrameError(f"response cannot be framed: {exc}") from exc
    parts.append(payload)
    return _frame(stream_id, RESPONSE, parts)


def encode_status(stream_id: int, code: int, details: str, trailing_metadata: PairsIn) -> bytes:
    """A whole STATUS frame: the call ended with the non-OK status ``code``."""
    text = details.encode(errors="replace")  # details are for people: a stray surrogate becomes "?"
    try:
        parts = [b"", _STATUS_HEAD.pack(code, len(text), len(trailing_metadata)), text]
        _add_pairs(parts, trailing_metadata)
    except (struct.error, TypeError, UnicodeEncodeError) as exc:  # a field too long, or not text/bytes
        raise FrameError(f"status cannot be framed: {exc}") from exc
    return _frame(stream_id, STATUS, parts)


def encode_open(stream_id: int, method: str, metadata: PairsIn, timeout: float | None) -> bytes:
    """A whole OPEN frame: a REQUEST's head with no payload; the messages follow as MESSAGE frames."""
    frame = bytearray(encode_request(stream_id, method, metadata, timeout, b""))
    frame[HEADER.size - 1] = OPEN
    return bytes(frame)


def encode_message(stream_id: int, payload: bytes) -> bytes:
    """A whole MESSAGE frame."""
    if len(payload) > _MAX_BODY:
        raise FrameError(too_large("frame", len(payload), _MAX_BODY))
    return HEADER.pack(len(payload), stream_id, MESSAGE) + payload


def encode_half(stream_id: int) -> bytes:
    """A whole HALF frame: the client's last message on that stream has been sent."""
    return HEADER.pack(0, stream_id, HALF)


def encode_end(stream_id: int, trailing_metadata: PairsIn) -> bytes:
    """A whole END frame: the stream ended OK, with these trailers."""
    try:
        parts = [b"", _RESPONSE_HEAD.pack(len(trailing_metadata))]
        _add_pairs(parts, trailing_metadata)
    except (struct.error, TypeError, UnicodeEncodeError) as exc:  # a field too long, or not text/bytes
        raise FrameError(f"trailers cannot be framed: {exc}") from exc
    return _frame(stream_id, END, parts)


def encode_window(stream_id: int, credit: int) -> bytes:
    """A whole WINDOW frame granting ``credit`` more bytes on the stream."""
    return HEADER.pack(_WINDOW.size, stream_id, WINDOW) + _WINDOW.pack(credit)


def encode_cancel(stream_id: int) -> bytes:
    """A whole CANCEL frame."""
    return HEADER.pack(0, stream_id, CANCEL)


def encode_refused(stream_id: int, reason: str) -> bytes:
    """A whole REFUSED frame: the server did not start this call."""
    return _frame(stream_id, REFUSED, [b"", reason.encode(errors="replace")])


# -- decoding --------------------------------------------------------------------------------------


def _pairs(body: bytes, offset: int, count: int) -> tuple[Pairs, int]:
    """``count`` metadata pairs starting at ``offset``, and the offset after them."""
    end = len(body)
    pairs: list[tuple[str, str | bytes]] = []
    for _ in range(count):
        if end - offset < _PAIR.size:
            raise FrameError("metadata pair header is cut short")
        key_length, kind, value_length = _PAIR.unpack_from(body, offset)
        offset += _PAIR.size
        if end - offset < key_length + value_length:
            raise FrameError("metadata pair is cut short")
        key = body[offset : offset + key_length].decode()
        offset += key_length
        raw = body[offset : offset + value_length]
        offset += value_length
        if kind == _TEXT:
            pairs.append((key, raw.decode()))
        elif kind == _BINARY:
            pairs.append((key, raw))
        else:
            raise FrameError(f"unknown metadata value kind {kind}")
    return tuple(pairs), offset


def decode_request(body: bytes) -> Request:
    """The fields of a REQUEST body; :class:`FrameError` when it does not parse."""
    if len(body) < _REQUEST_HEAD.size:
        raise FrameError("request head is cut short")
    seconds, path_length, count = _REQUEST_HEAD.unpack_from(body)
    if not math.isfinite(seconds):
        raise FrameError(f"request deadline {seconds} is not a number of seconds")
    offset = _REQUEST_HEAD.size + path_length
    if len(body) < offset:
        raise FrameError("request method path is cut short")
    try:
        method = body[_REQUEST_HEAD.size : offset].decode()
        metadata, offset = _pairs(body, offset, count)
    except UnicodeDecodeError as exc:
        raise FrameError(f"request text is not UTF-8: {exc}") from exc
    return Request(method, metadata, None if seconds < 0 else seconds, body[offset:])


def decode_response(body: bytes) -> Response:
    """The fields of a RESPONSE body; :class:`FrameError` when it does not parse."""
    if len(body) < _RESPONSE_HEAD.size:
        raise FrameError("response head is cut short")
    (count,) = _RESPONSE_HEAD.unpack_from(body)
    try:
        metadata, offset = _pairs(body, _RESPONSE_HEAD.size, count)
    except UnicodeDecodeError as exc:
        raise FrameError(f"response metadata is not UTF-8: {exc}") from exc
    return Response(metadata, body[offset:])


def decode_status(body: bytes) -> Status:
    """The fields of a STATUS body; :class:`FrameError` when it does not parse."""
    if len(body) < _STATUS_HEAD.size:
        raise FrameError("status head is cut short")
    code, details_length, count = _STATUS_HEAD.unpack_from(body)
    if code == 0:
        raise FrameError("a status frame cannot carry OK")
    offset = _STATUS_HEAD.size + details_length
    if len(body) < offset:
        raise FrameError("status details are cut short")
    try:
        details = body[_STATUS_HEAD.size : offset].decode()
        metadata, offset = _pairs(body, offset, count)
    except UnicodeDecodeError as exc:
        raise FrameError(f"status text is not UTF-8: {exc}") from exc
    if offset != len(body):
        raise FrameError(f"status frame has {len(body) - offset} bytes after its metadata")
    return Status(code, details, metadata)


def decode_end(body: bytes) -> Pairs:
    """The trailing metadata in an END body; :class:`FrameError` when it does not parse."""
    metadata, payload = decode_response(body)
    if payload:
        raise FrameError(f"end frame has {len(payload)} bytes after its metadata")
    return metadata


def decode_window(body: bytes) -> int:
    """The credit a WINDOW body grants."""
    if len(body) != _WINDOW.size:
        raise FrameError(f"window frame of {len(body)} bytes, not {_WINDOW.size}")
    (credit,) = _WINDOW.unpack(body)
    return int(credit)


def decode_refused(body: bytes) -> str:
    """The reason in a REFUSED body."""
    return body.decode(errors="replace")


class FrameReader:
    """Cuts the bytes of one connection into frames, as they arrive.

    A frame whose body is longer than ``max_body`` is reported as :class:`Oversized` and its
    bytes are skipped, never buffered, so the reader holds at most one frame under the cap plus
    one header. An unknown kind raises :class:`FrameError`: the framing itself cannot be trusted
    any more, and the connection should be closed.

        >>> reader = FrameReader(max_body=16)
        >>> frames = reader.feed(encode_cancel(7) + encode_response(8, (), b"hi")[:12])
        >>> frames, reader.feed(b"i")
        ([Frame(stream_id=7, kind=4, body=b'')], [Frame(stream_id=8, kind=2, body=b'\\x00\\x00hi')])
    """

    __slots__ = ("_buffer", "_skip", "began", "max_body")

    def __init__(self, max_body: int = DEFAULT_MAX_MESSAGE_BYTES + METADATA_ALLOWANCE) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._skip = 0
        self.began = 0.0
        """When (``time.monotonic``) the frame now half-read began to arrive: both ends cut off a
        peer whose frame takes too long, however it trickles."""

    @property
    def partial(self) -> bool:
        """Whether part of a frame has arrived and the rest has not (yet)."""
        return bool(self._buffer) or self._skip > 0

    def feed(self, data: bytes) -> list[Frame | Oversized]:
        """The frames completed by ``data``, in order."""
        out = self._feed(data)
        if (out or not self.began) and self.partial:
            self.began = time.monotonic()  # what is half-read now began in this read
        elif not self.partial:
            self.began = 0.0
        return out

    def _feed(self, data: bytes) -> list[Frame | Oversized]:
        out: list[Frame | Oversized] = []
        if self._skip:
            if len(data) <= self._skip:
                self._skip -= len(data)
                return out
            data = data[self._skip :]
            self._skip = 0
        buffer = self._buffer
        view: bytes | bytearray = data
        if buffer:
            buffer += data
            view = buffer
        offset, end, size, limit = 0, len(view), HEADER.size, self.max_body
        while end - offset >= size:
            length, stream_id, kind = HEADER.unpack_from(view, offset)
            if kind not in KINDS:
                raise FrameError(f"unknown frame kind {kind} on stream {stream_id}")
            start = offset + size
            if length > limit:
                out.append(Oversized(stream_id, kind, length))
                if end - start >= length:
                    offset = start + length
                    continue
                self._skip = length - (end - start)
                offset = end
                break
            if end - start < length:
                break
            offset = start + length
            out.append(Frame(stream_id, kind, bytes(view[start:offset])))
        if view is buffer:
            del buffer[:offset]
        elif offset < end:
            buffer += view[offset:]
        return out
