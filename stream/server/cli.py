"""`wavstream serve`: the websocket recognition server (docs/protocol.md).

    wavstream serve                          # ws://127.0.0.1:8765, embedded model, page at http://127.0.0.1:8765/
    wavstream serve --model BUNDLE --port 0  # any free port (printed)

Only argparse/stdlib are imported at module level; the server loads in run().
"""

from __future__ import annotations

import argparse
import os
import sys

from ..cli_transcribe import add_model_arguments, engine_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    net.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free port)")
    add_model_arguments(parser)
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-sessions", type=int, default=64, help="concurrent sessions; beyond it a client gets server_full (close 1013)")
    lim.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest websocket message accepted")
    lim.add_argument("--idle-timeout", type=float, default=30.0, help="s without a message before a session is flushed and closed (0 = none)")
    lim.add_argument("--max-session", type=float, default=3600.0, help="s a session may last (0 = unlimited)")
    lim.add_argument("--max-buffer", type=float, default=5.0, help="s of audio buffered per session before reading pauses")
    sec = parser.add_argument_group("security")
    sec.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="browser Origin allowed to connect (repeatable; '*' = any). Default: only this server's own page")
    sec.add_argument("--token", default=os.environ.get("WAVSTREAM_TOKEN"),
                     help="require this bearer token (Authorization header or start.token); default $WAVSTREAM_TOKEN")
    bat = parser.add_argument_group("batching")
    bat.add_argument("--max-batch", type=int, default=32, help="most streams in one engine call")
    bat.add_argument("--max-wait-ms", type=float, default=10.0, help="ms to wait for more streams before a batch runs")
    dec = parser.add_argument_group("decoding")
    dec.add_argument("--decoder", choices=["greedy", "beam"], default="greedy", help="CTC decoding method")
    dec.add_argument("--beam-size", type=int, default=8, help="prefix beam search width")
    parser.add_argument("--no-page", dest="page", action="store_false", help="do not serve the browser demo page at /")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from ..bundle import BundleError
    from ..engines import EngineUnavailableError
    from ..recognizer import DecodingConfig, Recognizer, resolve_model
    from .app import run_server

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        rec = Recognizer.from_bundle(
            resolve_model(args.model),
            decoding=DecodingConfig(args.decoder, args.beam_size),
            emit_features=True,
            **engine_options(args),
        )
    except (BundleError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"wavstream serve: {exc}", file=sys.stderr)
        return 2

    def ready(server: object) -> None:
        url = server.url  # type: ignore[attr-defined]
        print(f"wavstream serve: listening on {url}  (page: {url.replace('ws://', 'http://')}/, stats: /stats)", file=sys.stderr, flush=True)

    try:
        return asyncio.run(
            run_server(
                rec,
                args.host,
                args.port,
                ready=ready,
                max_sessions=args.max_sessions,
                max_message_bytes=args.max_message_bytes,
                idle_timeout_s=args.idle_timeout or None,
                max_session_s=args.max_session or None,
                max_buffer_s=args.max_buffer,
                allowed_origins=args.allow_origin,
                token=args.token,
                max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms,
                serve_pages=args.page,
            )
        )
    except OSError as exc:  # address in use, permission denied
        print(f"wavstream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"wavstream serve: {exc}", file=sys.stderr)
        return 2
