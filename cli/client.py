"""`wavstream client FILE|--mic [--url ws://127.0.0.1:8765]`: stream audio to a server, print live text.

Partials rewrite the current line on a terminal; each final gets its own
line. --json prints one JSON object per event. Only argparse/stdlib at module
level.

Exit status: 0 when the server decoded all the audio (`done` with reason
"end"); 1 when it refused, broke the protocol, went silent past a timeout,
or ended the session early (e.g. shutting down), or when the audio source
failed mid-stream; 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from .args import positive_float, sample_rate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("file", nargs="?", help="audio file to send (WAV/FLAC/OGG/...), or '-' for stdin "
                                                "(WAV/FLAC/OGG/... by its header, else raw s16le mono at --rate)")
    parser.add_argument("--mic", action="store_true", help="send the default microphone instead of a file (Ctrl-C ends)")
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server address")
    parser.add_argument("--token", default=os.environ.get("WAVSTREAM_TOKEN"), help="bearer token; default $WAVSTREAM_TOKEN")
    parser.add_argument("--realtime", action="store_true", help="pace a file at real-time speed")
    parser.add_argument("--chunk-ms", type=positive_float, default=100.0, help="audio per message, ms")
    parser.add_argument("--rate", type=sample_rate, default=16000,
                        help="sample rate of headerless stdin PCM / of the microphone (rates the protocol does not "
                             "take are resampled here)")
    parser.add_argument("--device", default=None, help="microphone device (name or index)")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")
    parser.add_argument("--words", action="store_true", help="ask for word times and confidences (shown with --json)")
    parser.add_argument("--latency-ms", type=int, default=None,
                        help="chunk size the server decodes this session with (one its model serves; /stats lists them)")
    parser.add_argument("--hotwords", metavar="FILE", default=None,
                        help="phrases the server biases this session towards, one per line, optionally 'phrase:score'")
    t = parser.add_argument_group("timeouts (seconds)")
    t.add_argument("--connect-timeout", type=positive_float, default=10.0, help="TCP connect and websocket handshake")
    t.add_argument("--ready-timeout", type=positive_float, default=10.0, help="the server's answer to start")
    t.add_argument("--send-timeout", type=positive_float, default=30.0,
                   help="each audio message must be taken by the server within this (it stopped reading otherwise)")
    t.add_argument("--result-timeout", type=positive_float, default=30.0,
                   help="after the end of the audio, each message (finals, then done) must come within this")


def run(args: argparse.Namespace) -> int:
    import asyncio

    if bool(args.file) == bool(args.mic):
        print("wavstream client: give an audio FILE or --mic (one of them)", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace) -> int:
    import asyncio

    from wavstream.stream.client import Client, ServerError, ServerProtocolError, ServerTimeoutError
    from .terminal import EventPrinter

    prog = "wavstream client"
    show = EventPrinter(sys.stdout, json_lines=args.json)

    hotwords = None
    if args.hotwords:
        from wavstream.stream.hotwords import HotwordError, read_hotwords_file

        try:
            hotwords = [f"{h.phrase}:{h.score:g}" for h in read_hotwords_file(args.hotwords)]
        except HotwordError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
    loop = asyncio.get_running_loop()
    if args.mic:
        from wavstream.stream.sources import MicrophoneSource, SourceError

        try:
            mic = MicrophoneSource(device=args.device, sample_rate=args.rate, block_s=args.chunk_ms / 1000.0)
        except (SourceError, ImportError, OSError, ValueError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        rate = mic.sample_rate
        blocks = None
    else:
        from wavstream.stream.sources import SourceError, open_source

        try:
            src = open_source(args.file, realtime=args.realtime, block_s=args.chunk_ms / 1000.0, stdin_rate=args.rate)
        except (SourceError, OSError, ValueError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        rate = src.sample_rate
        blocks = src

    try:
        client = await Client.connect(
            args.url,
            sample_rate=rate,
            token=args.token,
            words=args.words,
            latency_ms=args.latency_ms,
            hotwords=hotwords,
            open_timeout=args.connect_timeout,
            ready_timeout=args.ready_timeout,
            result_timeout=args.result_timeout,
            send_timeout=args.send_timeout,
        )
    except ServerTimeoutError as exc:
        print(f"{prog}: {args.url}: {exc.reason}", file=sys.stderr)
        return 1
    except ServerProtocolError as exc:
        print(f"{prog}: {args.url} does not speak the wavstream protocol: {exc.reason}", file=sys.stderr)
        return 1
    except ServerError as exc:
        print(f"{prog}: server refused the session: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # refused connection, bad URL, HTTP 401/403
        print(f"{prog}: cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1

    async def pump_file() -> None:
        # The file source may pace itself with sleeps (--realtime): read it in a thread.
        it = iter(blocks)
        while True:
            block = await loop.run_in_executor(None, next, it, None)
            if block is None:
                break
            await client.send_audio(block)
        await client.end()

    stop = asyncio.Event()  # Ctrl-C with --mic: send end, still print the last finals

    async def pump_mic() -> None:
        import signal

        try:
            loop.add_signal_handler(signal.SIGINT, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
        with mic:
            try:
                while not stop.is_set():
                    block = await loop.run_in_executor(None, mic.read, 0.2)
                    if block is not None:
                        await client.send_audio(block)
            finally:
                # What the microphone still holds (stop() closes the ring), also when the device was lost.
                mic.stop()
                try:
                    while (block := mic.read(0)) is not None:
                        await client.send_audio(block)
                except Exception:  # the connection is gone: the receiver reports it
                    pass
        await client.end()

    async def receive() -> None:
        async for ev in client.events():
            show(ev)

    sender = asyncio.create_task(pump_mic() if args.mic else pump_file())
    receiver = asyncio.create_task(receive())
    rc = 0
    send_error: Optional[BaseException] = None
    try:
        # The sender can fail too (unreadable audio, a lost microphone): then
        # end the session so the server still sends the finals of the audio it
        # got, and report the failure after them.
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            if not _is_closed(sender.exception()):  # a closed connection is the receiver's to report
                send_error = sender.exception()
                try:
                    await client.end()
                except Exception:  # the connection is gone too: the receiver says so
                    pass
        await receiver
    except ServerTimeoutError as exc:
        print(f"\n{prog}: {exc.reason}; the transcript above may be incomplete", file=sys.stderr)
        rc = 1
    except ServerProtocolError as exc:
        print(f"\n{prog}: the server broke the protocol: {exc.reason}", file=sys.stderr)
        rc = 1
    except ServerError as exc:
        print(f"\n{prog}: server error: {exc}", file=sys.stderr)
        rc = 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        rc = 130
    finally:
        for task in (sender, receiver):
            if not task.done():
                task.cancel()
        await client.close()
    if send_error is not None:
        print(f"\n{prog}: stopped sending: {send_error}", file=sys.stderr)
        return 1
    if rc == 0 and not client.complete:
        print(f"\n{prog}: the server ended the session before the end of the audio (reason: {client.done_reason}); "
              "the transcript above is incomplete", file=sys.stderr)
        rc = 1
    return rc


def _is_closed(exc: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed

    return isinstance(exc, ConnectionClosed)
