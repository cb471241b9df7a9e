"""The session protocol with no socket: the server's fault table, fed straight to ``SessionProtocol``,
gives the same error codes and close codes as through a real websocket; and a good session's life."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from test_server_errors import CASES

from wavstream.stream.events import Features, Final, Partial
from wavstream.stream.protocol import (
    CLOSE_CODES,
    AudioReceived,
    Done,
    EndMessage,
    EndReceived,
    ErrorMessage,
    Overloaded,
    ProtocolError,
    Ready,
    ServerMessageError,
    SessionProtocol,
    StartMessage,
    StartReceived,
    State,
    encode_server_message,
    parse_server_message,
    unpack_features,
)

LAYER = -1  # the toy bundle's feature layer (what the server passes)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_table_without_a_socket(case: str) -> None:
    start, messages, code, close_code = CASES[case]
    proto = SessionProtocol(max_message_bytes=8192, feature_layer=LAYER)
    feed = ([json.dumps({"type": "start", **start})] if start is not None else []) + list(messages)
    with pytest.raises(ProtocolError) as exc:
        for m in feed:
            proto.receive_bytes(m) if isinstance(m, bytes) else proto.receive_text(m)
    assert exc.value.code == code and exc.value.close_code == close_code
    assert proto.state is State.CLOSED and proto.close_code == close_code and proto.error_code == code
    out = proto.data_to_send()
    assert len(out) == 1 and json.loads(out[0]) == {"type": "error", "code": code, "reason": exc.value.reason}
    assert len(proto.close_reason.encode()) <= 123
    # a closed session ignores whatever still comes and sends nothing more
    assert proto.receive_text('{"type": "end"}') == [] and proto.data_to_send() == []


def test_a_whole_session() -> None:
    proto = SessionProtocol(max_message_bytes=1 << 20, feature_layer=LAYER)
    assert proto.state is State.AWAITING_START
    start = StartMessage(format="float32", features=True, feature_dtype="float32")
    (ev,) = proto.receive_text(start.to_json())
    assert ev == StartReceived(start) and proto.state is State.STREAMING
    proto.send_ready(session=1, sample_rate=16000, chunk_ms=320.0, frame_shift_ms=20.0, feature_dim=4,
                     feature_layer=LAYER, text=True)
    (audio,) = proto.receive_bytes(np.array([0.5, -0.25], "<f4").tobytes())
    assert isinstance(audio, AudioReceived) and audio.samples.tolist() == [0.5, -0.25]
    frames = np.arange(8, dtype=np.float32).reshape(2, 4)
    proto.send_events([Features(frames, 3), Partial("hel", 0), Final("hello", 0.1, 0.52, 0), Partial("w", 1)])
    assert proto.receive_text('{"type": "eof"}') == [EndReceived("end")] and proto.state is State.ENDING
    assert proto.receive_bytes(b"\0\0\0\0") == []  # after the end, input is not used
    proto.send_events([Final("world", 1.0, 1.5, 1)])
    proto.send_done("end")
    assert proto.state is State.CLOSED and proto.close_code == 1000
    out = proto.data_to_send()
    ready = json.loads(out[0])
    assert ready["type"] == "ready" and ready["protocol"] == 1 and ready["session"] == 1
    assert unpack_features(out[1])[0] == 3 and np.array_equal(unpack_features(out[1])[1], frames)
    assert [json.loads(m) for m in out[2:]] == [
        {"type": "partial", "text": "hel", "segment": 0},
        {"type": "final", "text": "hello", "start": 0.1, "end": 0.52, "segment": 0},
        {"type": "partial", "text": "w", "segment": 1},
        {"type": "final", "text": "world", "start": 1.0, "end": 1.5, "segment": 1},
        {"type": "done", "reason": "end"},
    ]


def test_features_only_when_asked_and_shutdown_close_code() -> None:
    proto = SessionProtocol()
    proto.receive_text(StartMessage().to_json())
    proto.send_events([Features(np.zeros((2, 4), np.float32), 0)])
    assert proto.data_to_send() == []  # features: false
    proto.end()
    assert proto.state is State.ENDING
    proto.send_done("shutting_down")
    assert proto.close_code == 1001 and json.loads(proto.data_to_send()[0]) == {"type": "done", "reason": "shutting_down"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fault_table_error_reads_back_typed(case: str) -> None:
    """The error a fault queues is what a client parses: the same code, reason and close code."""
    start, messages, code, close_code = CASES[case]
    proto = SessionProtocol(max_message_bytes=8192, feature_layer=LAYER)
    feed = ([StartMessage.from_dict(start).to_json()] if start is not None else []) + list(messages)
    with pytest.raises(ProtocolError) as exc:
        for m in feed:
            proto.receive_bytes(m) if isinstance(m, bytes) else proto.receive_text(m)
    (out,) = proto.data_to_send()
    err = parse_server_message(out)
    assert err == ErrorMessage(code, exc.value.reason) and err.close_code == close_code == CLOSE_CODES[code]


SERVER_MESSAGES = {
    "ready": (Ready(session=7, sample_rate=16000, chunk_ms=320.0, frame_shift_ms=20.0, feature_dim=4, feature_layer=-1,
                    text=True),
              '{"type":"ready","protocol":1,"session":7,"sample_rate":16000,"chunk_ms":320.0,"frame_shift_ms":20.0,'
              '"feature_dim":4,"feature_layer":-1,"text":true}'),
    "partial": (Partial("hél", 2), '{"type":"partial","text":"hél","segment":2}'),
    "final": (Final("hello", 0.1, 0.52, 0), '{"type":"final","text":"hello","start":0.1,"end":0.52,"segment":0}'),
    "overloaded": (Overloaded(2.5, 2.0), '{"type":"overloaded","lag_s":2.5,"max_lag_s":2.0}'),
    "done": (Done("idle_timeout"), '{"type":"done","reason":"idle_timeout"}'),
    "error": (ErrorMessage("bad_json", "text message is not valid JSON"),
              '{"type":"error","code":"bad_json","reason":"text message is not valid JSON"}'),
}


@pytest.mark.parametrize("name", sorted(SERVER_MESSAGES))
def test_server_messages_round_trip_with_v1_bytes(name: str) -> None:
    msg, wire = SERVER_MESSAGES[name]
    assert encode_server_message(msg) == wire
    assert parse_server_message(wire) == msg


def test_feature_frames_and_client_messages() -> None:
    frames = np.arange(6, dtype=np.float32).reshape(3, 2)
    wire = encode_server_message(Features(frames, 5), "float32")
    assert isinstance(wire, bytes) and parse_server_message(wire) == Features(frames, 5)
    assert EndMessage().to_json() == '{"type":"end"}'
    assert SessionProtocol().receive_text(StartMessage(sample_rate=8000).to_json())[0].start.sample_rate == 8000


@pytest.mark.parametrize("bad", ["not json", "[1]", '{"text": "a"}', '{"type": "final", "text": "a", "start": "x", "end": 1}',
                                 '{"type": "partial", "text": 5}', b"\x00\x01"])
def test_what_protocol_v1_does_not_allow_from_a_server(bad) -> None:
    with pytest.raises(ServerMessageError):
        parse_server_message(bad)


def test_server_messages_a_client_reads_leniently() -> None:
    assert parse_server_message('{"type": "from_v2", "x": 1}') is None  # newer servers may add types
    assert parse_server_message('{"type": "partial", "text": "a"}') == Partial("a", 0)  # segment left out
    ready = parse_server_message('{"type": "ready", "session": "fake", "chunk_ms": 80}')
    assert isinstance(ready, Ready) and ready.session is None and ready.chunk_ms == 80.0 and ready.protocol == 1
    assert parse_server_message('{"type": "done"}') == Done("end") and Done("shutting_down").close_code == 1001


def test_the_client_does_not_load_the_server() -> None:
    """The wire format sits beside the client: importing either loads neither the server package nor websockets."""
    code = ("import sys, wavstream.stream.client, wavstream.stream.protocol; "
            "print(sorted(m for m in sys.modules if m.startswith(('wavstream.stream.server', 'websockets'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_every_wavstream_exception_has_one_root() -> None:
    """``except WavstreamError`` catches each of the runtime's own exceptions; the built-in bases stay."""
    from wavstream.stream import (AudioFormatError, BundleError, BundleNotFoundError, ChunkSizeError, DeviceLostError,
                                  EngineUnavailableError, RingBufferClosed, SourceError, StateShapeError, WavstreamError)
    from wavstream.stream.client import ServerError, ServerProtocolError, ServerTimeoutError

    for cls in (AudioFormatError, BundleError, BundleNotFoundError, ChunkSizeError, DeviceLostError, EngineUnavailableError,
                RingBufferClosed, SourceError, StateShapeError, ProtocolError, ServerError, ServerProtocolError,
                ServerTimeoutError):
        assert issubclass(cls, WavstreamError), cls
    assert issubclass(AudioFormatError, ValueError) and issubclass(BundleNotFoundError, FileNotFoundError)
    assert issubclass(ProtocolError, ValueError) and issubclass(ServerError, RuntimeError)
