"""`wavstream client FILE|--mic [--url ws://127.0.0.1:8765]`: stream audio to a server, print live text.

Partials rewrite the current line on a terminal; each final gets its own
line. --json prints one JSON object per event. Only argparse/stdlib at module
level.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("file", nargs="?", help="audio file to send (WAV/FLAC/OGG/...), '-' for raw s16le on stdin")
    parser.add_argument("--mic", action="store_true", help="send the default microphone instead of a file (Ctrl-C ends)")
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="server address")
    parser.add_argument("--token", default=os.environ.get("WAVSTREAM_TOKEN"), help="bearer token; default $WAVSTREAM_TOKEN")
    parser.add_argument("--realtime", action="store_true", help="pace a file at real-time speed")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="audio per message, ms")
    parser.add_argument("--rate", type=int, default=16000, help="sample rate of raw stdin PCM / of the microphone")
    parser.add_argument("--device", default=None, help="microphone device (name or index)")
    parser.add_argument("--json", action="store_true", help="one JSON object per event")


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

    from .client import Client, ServerError
    from .terminal import EventPrinter

    show = EventPrinter(sys.stdout, json_lines=args.json)

    loop = asyncio.get_running_loop()
    if args.mic:
        from .sources import MicrophoneSource, SourceError

        try:
            mic = MicrophoneSource(device=args.device, sample_rate=args.rate, block_s=args.chunk_ms / 1000.0)
        except (SourceError, ImportError, OSError) as exc:
            print(f"wavstream client: {exc}", file=sys.stderr)
            return 2
        rate = mic.sample_rate
        blocks = None
    else:
        from .sources import SourceError, open_source

        try:
            src = open_source(args.file, realtime=args.realtime, block_s=args.chunk_ms / 1000.0, stdin_rate=args.rate)
        except (SourceError, OSError, ValueError) as exc:
            print(f"wavstream client: {exc}", file=sys.stderr)
            return 2
        rate = src.sample_rate
        blocks = src

    try:
        client = await Client.connect(args.url, sample_rate=rate, token=args.token)
    except ServerError as exc:
        print(f"wavstream client: server refused the session: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # refused connection, bad URL, HTTP 401/403
        print(f"wavstream client: cannot connect to {args.url}: {exc}", file=sys.stderr)
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
            while not stop.is_set():
                block = await loop.run_in_executor(None, mic.read, 0.2)
                if block is not None:
                    await client.send_audio(block)
        await client.end()

    sender = asyncio.create_task(pump_mic() if args.mic else pump_file())
    rc = 0
    try:
        async for ev in client.events():
            show(ev)
    except ServerError as exc:
        print(f"\nwavstream client: server error: {exc}", file=sys.stderr)
        rc = 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        rc = 130
    finally:
        if not sender.done():
            sender.cancel()
        await client.close()
    return rc
