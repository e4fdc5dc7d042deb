"""Frames: a 4-byte big-endian length, then one UTF-8 JSON envelope.

Envelope::

    {"v": 1, "seq": 7, "type": "StartVm", "reply": false, "body": {...}}

``seq`` numbers requests per sender; an answer carries the number of the
request it answers and ``"reply": true``.  Anything that does not fit (bad
length, bad JSON, another protocol version, an unknown type, a body that does
not match its type) raises a `ProtocolError` whose message is the reason the
session is closed.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from typing import Any

from stackwright.protocol.codec import CodecError, decode, encode_as
from stackwright.protocol.messages import MESSAGE_TYPES, Message

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
HEADER = struct.Struct("!I")
DEFAULT_MAX_FRAME = 1 << 20


class ProtocolError(Exception):
    """The peer sent something this side cannot accept; the session must close."""


class FrameTooLarge(ProtocolError):
    pass


class MalformedFrame(ProtocolError):
    pass


class UnsupportedVersion(ProtocolError):
    pass


class UnknownMessage(ProtocolError):
    pass


@dataclass(frozen=True)
class Frame:
    seq: int
    message: Message
    reply: bool = False


def encode_frame(frame: Frame) -> bytes:
    envelope = {
        "v": PROTOCOL_VERSION,
        "seq": frame.seq,
        "type": frame.message.type_name(),
        "reply": frame.reply,
        "body": encode_as(frame.message, type(frame.message)),
    }
    payload = json.dumps(envelope, separators=(",", ":")).encode()
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> Frame:
    """Parse one frame's payload (without its length header)."""
    try:
        envelope = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedFrame(f"frame is not valid JSON ({exc})") from None
    except RecursionError:
        raise MalformedFrame("frame is nested too deeply") from None
    if not isinstance(envelope, dict):
        raise MalformedFrame("frame is not a JSON object")
    version = envelope.get("v")
    # Only an integer names a version: 1.0, true and lists are refused (lists are not even hashable).
    if not isinstance(version, int) or isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        supported = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise UnsupportedVersion(f"protocol version {version!r} is not supported (this side speaks {supported})")
    seq = envelope.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise MalformedFrame(f"frame has an invalid sequence number {seq!r}")
    reply = envelope.get("reply", False)
    if not isinstance(reply, bool):
        raise MalformedFrame(f"frame has an invalid reply flag {reply!r}")
    type_name = envelope.get("type")
    message_class = MESSAGE_TYPES.get(type_name) if isinstance(type_name, str) else None
    if message_class is None:
        raise UnknownMessage(f"unknown message type {type_name!r}")
    try:
        message = decode(message_class, envelope.get("body"))
    except CodecError as exc:
        raise MalformedFrame(f"invalid {type_name} message: {exc}") from None
    except RecursionError:
        raise MalformedFrame(f"invalid {type_name} message: nested too deeply") from None
    return Frame(seq=seq, message=message, reply=reply)


async def read_frame(reader: asyncio.StreamReader, max_size: int = DEFAULT_MAX_FRAME) -> Frame | None:
    """Read one frame; ``None`` when the peer closed the stream between frames."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise MalformedFrame("stream ended inside a frame header") from None
    (size,) = HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_size} bytes")
    if size == 0:
        raise MalformedFrame("empty frame")
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise MalformedFrame(f"stream ended inside a frame of {size} bytes") from None
    return decode_payload(payload)


def describe(message: Message) -> str:
    """A short, loggable rendering of a message with its secret fields redacted."""
    body: Any = encode_as(message, type(message))
    for dotted in message.secret_fields:
        _redact(body, dotted.split("."))
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{message.type_name()} {text}"


def _redact(body: Any, path: list[str]) -> None:
    if not isinstance(body, dict) or path[0] not in body:
        return
    if len(path) == 1:
        if body[path[0]] is not None:
            body[path[0]] = "********"
    else:
        _redact(body[path[0]], path[1:])
