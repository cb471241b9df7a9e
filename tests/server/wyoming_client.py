"""A Wyoming client that replays Home Assistant's order, with the real ``wyoming`` package (AsyncTcpClient).

Home Assistant (homeassistant/components/wyoming/stt.py) describes the service on its own connection,
then per utterance opens a new connection and sends ``transcribe``, ``audio-start``, the microphone's
audio as 1024-byte ``audio-chunk`` events while it reads the answers concurrently, and ``audio-stop``;
it takes the ``transcript`` (or the joined ``transcript-chunk`` texts while streaming).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from wyoming.asr import Transcribe
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe

CHUNK_BYTES = 1024


@dataclass
class Utterance:
    events: list[Event] = field(default_factory=list)
    transcript: Optional[str] = None
    stop_sent_t: Optional[float] = None  # monotonic time audio-stop was written
    transcript_t: Optional[float] = None  # monotonic time the transcript arrived

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def chunks(self) -> list[str]:
        return [e.data["text"] for e in self.events if e.type == "transcript-chunk"]

    @property
    def errors(self) -> list[dict]:
        return [e.data for e in self.events if e.type == "error"]


async def describe(port: int) -> tuple[dict, float]:
    """info's data and the seconds from writing describe to reading info."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        t0 = time.monotonic()
        await client.write_event(Describe().event())
        while True:
            ev = await client.read_event()
            assert ev is not None, "closed before info"
            if ev.type == "info":
                return ev.data, time.monotonic() - t0


def pcm16(wave: np.ndarray) -> bytes:
    return np.clip(np.round(wave * 32768), -32768, 32767).astype("<i2").tobytes()


async def transcribe(
    port: int, audio: bytes, *, rate: int = 16000, width: int = 2, channels: int = 1, language: Optional[str] = "en",
    send_stop: bool = True, realtime: float = 0.0, until: tuple[str, ...] = ("transcript",), timeout: float = 30.0,
    names: Optional[list[str]] = None,
) -> Utterance:
    """One utterance on a new connection, in Home Assistant's order; reads until one of ``until`` (or error).

    ``realtime``: seconds to sleep per chunk (0: as fast as the socket takes it).
    """
    u = Utterance()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        done = asyncio.Event()

        async def reader() -> None:
            while True:
                ev = await client.read_event()
                if ev is None:
                    break
                u.events.append(ev)
                if ev.type == "transcript" and u.transcript is None:
                    u.transcript = ev.data["text"]
                    u.transcript_t = time.monotonic()
                if ev.type in until or ev.type == "error":
                    done.set()
                    break
            done.set()

        task = asyncio.create_task(reader())
        await client.write_event(Transcribe(language=language, transcript_names=names).event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(audio), CHUNK_BYTES):
            if done.is_set():
                break  # Home Assistant stops uploading once it has its transcript
            await client.write_event(AudioChunk(rate=rate, width=width, channels=channels,
                                                audio=audio[i:i + CHUNK_BYTES]).event())
            if realtime:
                await asyncio.sleep(realtime)
        if send_stop and not done.is_set():
            u.stop_sent_t = time.monotonic()
            await client.write_event(AudioStop().event())
        await asyncio.wait_for(done.wait(), timeout)
        task.cancel()
    return u
