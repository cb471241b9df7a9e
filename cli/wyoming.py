"""`wavstream wyoming`: speech-to-text for Home Assistant over the Wyoming protocol (docs/home-assistant.md).

    wavstream wyoming                                   # tcp://127.0.0.1:10300, embedded model
    wavstream wyoming --uri tcp://0.0.0.0:10300         # reachable from the LAN (Wyoming has no authentication)
    wavstream wyoming --endpointing --zeroconf          # wavstream ends utterances; announced over mDNS
    wavstream wyoming --health-check                    # Describe -> Info round trip; exit 0 if it answered

Every flag can also be set from the environment: ``WAVSTREAM_WYOMING_`` + the
flag's name in capitals with ``_`` for ``-`` (``WAVSTREAM_WYOMING_URI``,
``WAVSTREAM_WYOMING_ENDPOINTING=1``); a flag on the command line wins.
Needs the ``[wyoming]`` extra. Only argparse/stdlib at module level.
"""

from __future__ import annotations

import argparse
import os
import sys

from .args import (add_decoding_arguments, add_endpoint_arguments, add_model_arguments, decoding_config,
                   endpoint_config, hotwords_list)
from .args import engine_options, int_at_least, positive_float

ENV_PREFIX = "WAVSTREAM_WYOMING_"
_TRUE = ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    net = parser.add_argument_group("network")
    net.add_argument("--uri", default="tcp://127.0.0.1:10300",
                     help="where to listen: tcp://HOST:PORT (0.0.0.0 exposes it to the network; Wyoming has no "
                          "authentication) or stdio://")
    net.add_argument("--zeroconf", nargs="?", const="", default=None, metavar="NAME",
                     help="announce the server over mDNS (_wyoming._tcp.local.) for Home Assistant discovery; "
                          "NAME defaults to this machine's MAC address (needs the zeroconf package)")
    net.add_argument("--health-check", action="store_true",
                     help="do not serve: send describe to --uri and exit 0 if info comes back within --timeout")
    net.add_argument("--timeout", type=positive_float, default=5.0, help="s the health check waits for info")
    add_model_arguments(parser)
    asr = parser.add_argument_group("speech to text")
    asr.add_argument("--language", action="append", default=None, metavar="LANG",
                     help="language advertised and accepted (repeatable); default: en")
    asr.add_argument("--no-streaming", dest="streaming", action="store_false",
                     help="send only the transcript, no transcript-start/-chunk/-stop")
    asr.add_argument("--endpointing", action="store_true",
                     help="wavstream's endpoint rules end the utterance: the transcript is sent at the first "
                          "endpoint (Home Assistant then needs no VAD of its own)")
    add_endpoint_arguments(parser)
    dec = add_decoding_arguments(parser)
    dec.add_argument("--hotwords", default=None, metavar="FILE",
                     help="phrases to bias every conversation towards, one per line, optionally 'phrase:score' (turns "
                          "on beam search); Home Assistant's entity names and terms add to them")
    lim = parser.add_argument_group("limits")
    lim.add_argument("--max-sessions", type=int_at_least(1), default=64, help="utterances decoded at once")
    lim.add_argument("--max-buffer", type=positive_float, default=5.0, help="s of audio buffered per utterance")
    lim.add_argument("--idle-timeout", type=float, default=30.0, help="s without an event before a connection is closed (0 = never)")
    lim.add_argument("--max-batch", type=int_at_least(1), default=32, help="most streams in one engine call")
    lim.add_argument("--max-wait-ms", type=float, default=10.0, help="ms to wait for more streams before a batch runs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every utterance")
    _environment_defaults(parser)


def _environment_defaults(parser: argparse.ArgumentParser) -> None:
    """Defaults from WAVSTREAM_WYOMING_* (as container images set them); the command line still wins."""
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "health_check"):
            continue
        name = ENV_PREFIX + longs[0][2:].upper().replace("-", "_")
        if longs[0] == "--no-streaming":
            name = ENV_PREFIX + "STREAMING"  # WAVSTREAM_WYOMING_STREAMING=0 turns it off
        text = os.environ.get(name)
        if text is None:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            action.default = text.strip().lower() in _TRUE
        elif isinstance(action, argparse._AppendAction):
            action.default = [t for t in text.split(",") if t.strip()]
        else:
            try:
                action.default = action.type(text) if callable(action.type) else text
            except (argparse.ArgumentTypeError, ValueError) as exc:
                parser.error(f"${name}: {exc}")
        action.help = (action.help or "") + f" [env {name}]"


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from wavstream.stream.errors import WavstreamError
    from wavstream.stream.server.wyoming import WyomingServer, close_zeroconf, describe, register_zeroconf

    if args.health_check:
        try:
            info = asyncio.run(describe(args.uri, args.timeout))
        except WavstreamError as exc:
            print(f"wavstream wyoming: unhealthy: {exc}", file=sys.stderr)
            return 1
        names = [p.get("name") for p in info.get("asr", [])]
        print(f"wavstream wyoming: {args.uri} answered info in {1000 * info['_round_trip_s']:.0f} ms (asr: {', '.join(map(str, names))})")
        return 0

    from wavstream.stream.bundle import BundleError
    from wavstream.stream.engines import EngineUnavailableError
    from wavstream.stream.recognizer import Recognizer, resolve_model

    try:
        hotwords = hotwords_list(args)
        rec = Recognizer.from_bundle(resolve_model(args.model), decoding=decoding_config(args),
                                     endpoint=endpoint_config(args), emit_features=False, **engine_options(args))
        rec.create_stream(hotwords=hotwords)  # a phrase the model cannot spell fails here, before the server starts
    except (BundleError, EngineUnavailableError, ImportError, ValueError) as exc:
        print(f"wavstream wyoming: {exc}", file=sys.stderr)
        return 2

    async def serve() -> int:
        server = WyomingServer(
            rec, args.uri, languages=args.language or ["en"], streaming=args.streaming, endpointing=args.endpointing,
            max_sessions=args.max_sessions, max_buffer_s=args.max_buffer, idle_timeout_s=args.idle_timeout or None,
            max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, hotwords=hotwords,
        )
        await server.start()
        zc = None
        if args.zeroconf is not None:
            if server.port is None:
                print("wavstream wyoming: --zeroconf needs a tcp:// uri", file=sys.stderr)
                await server.shutdown()
                return 2
            try:
                from urllib.parse import urlparse

                bound = urlparse(server.uri).hostname
                # Announce the bound address (a wildcard bind: the address that routes to the LAN).
                host = None if bound in (None, "0.0.0.0", "::") else bound
                if host is not None and host.startswith("127."):
                    print("wavstream wyoming: note: --zeroconf announces a loopback address; Home Assistant on "
                          "another machine cannot reach it (bind e.g. --uri tcp://0.0.0.0:10300)", file=sys.stderr)
                zc = await register_zeroconf(server.port, args.zeroconf or None, host)
            except OSError as exc:  # no network to announce on (no route to the mDNS group)
                print(f"wavstream wyoming: --zeroconf: cannot announce the service: {exc}", file=sys.stderr)
                await server.shutdown()
                return 2
        if not args.uri.startswith("stdio:"):  # stdout is the protocol there
            print(f"wavstream wyoming: listening on {server.uri} (model {server.model_name}, "
                  f"{'endpointing' if args.endpointing else 'external VAD'}, "
                  f"{'streaming' if args.streaming else 'batch'})", file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        waiter = asyncio.ensure_future(server.serve_forever())
        await asyncio.wait({waiter, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        await server.shutdown()
        if zc is not None:
            await close_zeroconf(zc)
        return 0

    try:
        return asyncio.run(serve())
    except OSError as exc:
        print(f"wavstream wyoming: cannot listen on {args.uri}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"wavstream wyoming: {exc}", file=sys.stderr)
        return 2
