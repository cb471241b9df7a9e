"""wavstream websocket server: many sessions, one batched inference loop.

    from wavstream.stream import Recognizer
    from wavstream.stream.server import Server, run_server

See app.py for the server (sockets, HTTP, authentication, limits), session.py
for one session's buffers, batcher.py for the shared inference loop, and
stream/protocol.py (docs/protocol.md) for the wire format it shares with the
client; the ``wavstream serve`` command is cli/serve.py.
Needs the ``websockets`` package (a runtime dependency).
"""

from .app import Server, run_server, tls_context
from .batcher import Batcher
from ..protocol import (
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    ErrorCode,
    ProtocolError,
    StartMessage,
    auth_subprotocol,
    pack_features,
    unpack_features,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "ProtocolError",
    "StartMessage",
    "pack_features",
    "unpack_features",
    "SUBPROTOCOL",
    "auth_subprotocol",
    "Server",
    "run_server",
    "tls_context",
    "Batcher",
]
