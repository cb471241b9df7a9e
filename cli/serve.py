"""`wavstream serve`: the websocket recognition server (docs/protocol.md).

    wavstream serve                          # ws://127.0.0.1:8765, embedded model, page at http://127.0.0.1:8765/
    wavstream serve --model BUNDLE --port 0  # any free port (printed)
    wavstream serve --host 0.0.0.0 --certfile cert.pem --keyfile key.pem --allow-host myhost.lan
                                             # wss:// and https:// for the LAN (browsers need https for the microphone)

Only argparse/stdlib are imported at module level; the server loads in run().
"""

from __future__ import annotations

import argparse
import os
import sys

from .args import add_decoding_arguments, add_model_arguments, decoding_config, engine_options, hotwords_list, int_at_least


def _sessions(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)")
    net.add_argument("--port", type=int, default=8765, help="TCP port (0 = any free port)")
    net.add_argument("--certfile", help="PEM certificate (chain): serve wss:// and https:// (needs --keyfile)")
    net.add_argument("--keyfile", help="PEM private key of --certfile")
    net.add_argument("--wyoming", default=None, metavar="URI",
                     help="also serve Home Assistant's Wyoming protocol at URI (e.g. tcp://127.0.0.1:10300) from the "
                          "same inference loop; needs the [wyoming] extra (see `wavstream wyoming` for its own options)")
    model = add_model_arguments(parser)
    model.add_argument("--decode-in-triton", action="store_true",
                       help="the Triton model (--engine triton://HOST:PORT/NAME_decode) decodes and endpoints too: "
                            "a model written by `wavstream triton-repo --decode`; no local bundle is used (--model, "
                            "--latency-ms and the decoding flags are the repository's)")
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-sessions", type=_sessions, default=None, metavar="N|auto",
                     help="concurrent sessions; beyond it a client gets server_full (close 1013). "
                          "Default auto: measured at start from the engine's cost per chunk")
    lim.add_argument("--max-pending", type=int, default=128,
                     help="connections not yet in a session (handshake, or waiting for start); more are closed at once")
    lim.add_argument("--start-timeout", type=_positive(float), default=5.0, help="s from connecting to a valid start message")
    lim.add_argument("--max-message-bytes", type=int, default=1 << 20, help="largest websocket message accepted")
    lim.add_argument("--idle-timeout", type=float, default=30.0,
                     help="s without a message before a session is flushed and closed, and without reading before "
                          "a client is dropped (0 = no input timeout)")
    lim.add_argument("--max-session", type=float, default=3600.0, help="s a session may last (0 = unlimited)")
    lim.add_argument("--max-buffer", type=float, default=5.0, help="s of audio buffered per session before reading pauses")
    lim.add_argument("--max-output", type=int, default=1 << 20, metavar="BYTES",
                     help="bytes of results queued per session before its decoding pauses")
    lim.add_argument("--max-lag", type=float, default=2.0,
                     help="s behind real time before a session is told `overloaded` and new sessions are refused (0 = never)")
    lim.add_argument("--keepalive", type=_positive(float), default=20.0, help="s between pings, and to wait for a pong")
    sec = parser.add_argument_group("security")
    sec.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                     help="another browser Origin allowed to connect, besides this server's own page (repeatable; '*' = any)")
    sec.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="another Host name this server answers to, besides loopback names and IP addresses "
                          "(repeatable; '.example.com' = its subdomains; '*' = any)")
    # The default is read in run(), not here: --help prints defaults, and must not print a secret.
    sec.add_argument("--token", default=None,
                     help="require this bearer token (Authorization header, or the wavstream.auth subprotocol from "
                          "browsers; also for /stats). Default: $WAVSTREAM_TOKEN if set")
    bat = parser.add_argument_group("batching")
    bat.add_argument("--max-batch", type=int, default=32, help="most streams in one engine call")
    bat.add_argument("--max-wait-ms", type=float, default=10.0,
                     help="ms to wait for more streams' chunks before a batch runs, with few sessions")
    bat.add_argument("--max-wait-busy-ms", type=float, default=None,
                     help="the longest such wait, reached once the sessions' chunks fill a batch of 16 in it; "
                          "the wait grows with the sessions between the two (unset: 4 x --max-wait-ms)")
    bat.add_argument("--workers", type=int_at_least(1), default=1,
                     help="batches that run at once, each in its own thread on other sessions (onnxruntime "
                          "only); --threads is then per worker. On 2 cores --workers 2 --threads 1 cuts p95 latency "
                          "by a third at 64-80 streams (docs/bench.md, Server)")
    dec = add_decoding_arguments(parser, lm=True)
    dec.add_argument("--hotwords", default=None, metavar="FILE",
                     help="phrases to bias every session towards, one per line, optionally 'phrase:score' (turns on "
                          "beam search); a session's own 'hotwords' in its start add to them, and a phrase in both "
                          "takes the session's score")
    parser.add_argument("--no-page", dest="page", action="store_false", help="do not serve the browser demo page at /")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every session")


def _recognizers(args: argparse.Namespace) -> tuple:
    """The bundle's Recognizer and one per other latency it serves, for sessions that ask ("latency_ms" in start).
    A Triton model serves one latency (the one its repository was written for): only that one then."""
    from wavstream.stream.recognizer import Recognizer, resolve_model

    path = resolve_model(args.model)
    rec = Recognizer.from_bundle(path, decoding=decoding_config(args), emit_features=True, **engine_options(args))
    triton = engine_options(args)["backend"] == "triton"
    others = {ms: Recognizer.from_bundle(path, decoding=decoding_config(args), emit_features=True,
                                         **{**engine_options(args), "latency_ms": ms})
              for ms in rec.config.latencies_ms if ms != rec.config.chunk_ms and not triton}
    return rec, others


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.hotwords import HotwordError
    from wavstream.stream.server.app import run_server

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    token = args.token if args.token is not None else os.environ.get("WAVSTREAM_TOKEN") or None
    ssl_context = None
    if args.certfile or args.keyfile:
        if not (args.certfile and args.keyfile):
            print("wavstream serve: TLS needs both --certfile and --keyfile", file=sys.stderr)
            return 2
        import ssl

        from wavstream.stream.server.app import tls_context

        try:
            ssl_context = tls_context(args.certfile, args.keyfile)
        except (OSError, ssl.SSLError) as exc:
            print(f"wavstream serve: cannot use {args.certfile} / {args.keyfile}: {exc}", file=sys.stderr)
            return 2
    try:
        hotwords = hotwords_list(args)
        if args.decode_in_triton:
            opts = engine_options(args)
            if opts["backend"] != "triton":
                raise ValueError("--decode-in-triton needs --engine triton://HOST:PORT/MODEL (or --backend triton)")
            from wavstream.stream.triton.recognizer import TritonRecognizer

            rec = TritonRecognizer(opts["url"], opts["model"], emit_features=True)
            others: dict = {}
        else:
            rec, others = _recognizers(args)
    except (BundleError, EngineUnavailableError, HotwordError, ImportError, ValueError) as exc:
        print(f"wavstream serve: {exc}", file=sys.stderr)
        return 2

    sequences = getattr(rec.engine, "sequences", None)  # a Triton engine: Triton forgets silent streams
    held = sequences.idle_s if sequences is not None else None
    if held is not None and (not args.idle_timeout or args.idle_timeout >= held):
        print(f"wavstream serve: note: Triton forgets a stream silent for {held:g} s, and --idle-timeout "
              f"{args.idle_timeout or 'off'} lets a session stay silent that long; such a session will fail "
              f"(write the repository with a larger --idle-s, or lower --idle-timeout)", file=sys.stderr)

    def ready(server: object) -> None:
        url = server.url  # type: ignore[attr-defined]
        page = url.replace("wss://", "https://").replace("ws://", "http://")
        print(f"wavstream serve: listening on {url}  (page: {page}/, stats: /stats, "
              f"max sessions: {server.max_sessions})", file=sys.stderr, flush=True)  # type: ignore[attr-defined]

    attach = None
    if args.wyoming:
        from wavstream.stream.server.wyoming import WyomingServer

        async def attach(server: object) -> object:
            wy = WyomingServer(rec, args.wyoming, batcher=server.batcher,  # type: ignore[attr-defined]
                               hotwords=server.hotwords)  # type: ignore[attr-defined]
            await wy.start()
            print(f"wavstream serve: Wyoming (Home Assistant) on {wy.uri}", file=sys.stderr, flush=True)
            return wy.shutdown

    try:
        return asyncio.run(
            run_server(
                rec,
                args.host,
                args.port,
                ready=ready,
                attach=attach,
                max_sessions=args.max_sessions,
                max_pending=args.max_pending,
                start_timeout_s=args.start_timeout,
                max_message_bytes=args.max_message_bytes,
                idle_timeout_s=args.idle_timeout or None,
                max_session_s=args.max_session or None,
                max_buffer_s=args.max_buffer,
                max_out_bytes=args.max_output,
                max_lag_s=args.max_lag or None,
                keepalive_s=args.keepalive,
                allowed_origins=args.allow_origin,
                allowed_hosts=args.allow_host,
                token=token,
                ssl_context=ssl_context,
                max_batch=args.max_batch,
                max_wait_ms=args.max_wait_ms,
                max_wait_busy_ms=args.max_wait_busy_ms,
                workers=args.workers,
                serve_pages=args.page,
                latencies=others,
                hotwords=hotwords,
            )
        )
    except OSError as exc:  # address in use, permission denied
        print(f"wavstream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"wavstream serve: {exc}", file=sys.stderr)
        return 2
    finally:
        for r in (rec, *others.values()):
            r.engine.close()
