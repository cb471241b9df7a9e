"""wavstream websocket server: many sessions, one batched inference loop.

    from wavstream.stream import Recognizer
    from wavstream.stream.server import Server, run_server

See app.py for the server, protocol.py (and docs/protocol.md) for the wire
format, batcher.py for the shared inference loop, cli.py for ``wavstream serve``.
Needs the ``websockets`` package (a runtime dependency).
"""

from .app import Server, run_server
from .batcher import Batcher
from .protocol import PROTOCOL_VERSION, ErrorCode, ProtocolError, StartMessage, pack_features, unpack_features

__all__ = [
    "PROTOCOL_VERSION",
    "ErrorCode",
    "ProtocolError",
    "StartMessage",
    "pack_features",
    "unpack_features",
    "Server",
    "run_server",
    "Batcher",
]
