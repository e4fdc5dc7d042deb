import asyncio
import json
import struct

import pytest

from stackwright.protocol import messages as m
from stackwright.protocol.framing import (
    Frame,
    FrameTooLarge,
    MalformedFrame,
    UnknownMessage,
    UnsupportedVersion,
    decode_payload,
    describe,
    encode_frame,
    read_frame,
)


def payload(**envelope):
    base = {"v": 1, "seq": 1, "type": "QueryVm", "reply": False, "body": {"name": "i-1"}}
    base.update(envelope)
    return json.dumps(base).encode()


def read_bytes(data: bytes, max_size: int = 1024):
    async def scenario():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, max_size)

    return asyncio.run(scenario())


def test_frame_is_length_prefixed_json():
    data = encode_frame(Frame(seq=7, message=m.QueryVm(name="i-1")))
    (size,) = struct.unpack("!I", data[:4])
    assert size == len(data) - 4
    assert json.loads(data[4:]) == {"v": 1, "seq": 7, "type": "QueryVm", "reply": False, "body": {"name": "i-1"}}
    assert read_bytes(data) == Frame(seq=7, message=m.QueryVm(name="i-1"))


def test_clean_end_of_stream_between_frames():
    assert read_bytes(b"") is None


@pytest.mark.parametrize(
    "data, error, text",
    [
        (struct.pack("!I", 5000) + b"{}", FrameTooLarge, "frame of 5000 bytes exceeds the limit of 1024 bytes"),
        (struct.pack("!I", 0), MalformedFrame, "empty frame"),
        (b"\x00\x00", MalformedFrame, "stream ended inside a frame header"),
        (struct.pack("!I", 50) + b"{", MalformedFrame, "stream ended inside a frame of 50 bytes"),
    ],
)
def test_stream_level_errors(data, error, text):
    with pytest.raises(error, match=text):
        read_bytes(data)


@pytest.mark.parametrize(
    "raw, error, text",
    [
        (b"not json", MalformedFrame, "frame is not valid JSON"),
        (b"\xff\xfe", MalformedFrame, "frame is not valid JSON"),
        (b"[1, 2]", MalformedFrame, "frame is not a JSON object"),
        (payload(v=2), UnsupportedVersion, r"protocol version 2 is not supported \(this side speaks 1\)"),
        (payload(v=None), UnsupportedVersion, "protocol version None"),
        (payload(seq=-1), MalformedFrame, "invalid sequence number -1"),
        (payload(seq=True), MalformedFrame, "invalid sequence number True"),
        (payload(reply="yes"), MalformedFrame, "invalid reply flag"),
        (payload(type="FormatDisk"), UnknownMessage, "unknown message type 'FormatDisk'"),
        (payload(type="__init__"), UnknownMessage, "unknown message type"),
        (payload(body={"name": 3}), MalformedFrame, "invalid QueryVm message: QueryVm.name: expected str"),
        (payload(body=None), MalformedFrame, "QueryVm: expected an object, got null"),
    ],
)
def test_payload_errors(raw, error, text):
    with pytest.raises(error, match=text):
        decode_payload(raw)


def test_describe_redacts_secrets():
    text = describe(m.Enroll(token="very-secret", csr_pem="csr", guid="g"))
    assert "very-secret" not in text and "********" in text and '"guid":"g"' in text
    spec = m.VmSpec(name="i-1", uuid="u", vcpus=1, cpu_mhz=1, memory_mb=64, vnc_password="hunter2")
    assert "hunter2" not in describe(m.StartVm(spec=spec))
    assert len(describe(m.CaAnswer(ca_pem="x" * 5000))) < 400
