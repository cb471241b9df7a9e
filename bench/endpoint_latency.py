"""End of speech -> Final: how long a user waits for the text after they stop talking.

Each utterance is followed by 3 s of silence and fed as a microphone would
feed it (20 ms blocks). The latency of its first Final is

    (audio position when the Final came out) - (end of the speech) + (compute time of that step)

where the end of the speech is the last sample above 2 % of the utterance's
peak (its sound, not the silence a TTS engine leaves after it), and the
compute time is the measured wall time of the decode call that produced the
Final: with live audio the chunk is complete at that position and the text
appears once the step is computed. An utterance that comes out as more than
one Final (the rule fired inside a pause) counts as *split*; one with no Final
at all as *lost*.

Rules are compared on the same audio, so only the endpoint rule differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["EndpointResult", "speech_end_s", "measure_rule", "utterances_from", "run"]

TRAILING_SILENCE_S = 3.0
BLOCK_S = 0.02


@dataclass(frozen=True)
class EndpointResult:
    rule: str
    latencies_s: tuple[float, ...]  # one per utterance that gave a Final
    split: int  # utterances that came out as more than one Final
    lost: int  # utterances that gave no Final
    utterances: int

    def summary(self) -> dict:
        lat = np.array(self.latencies_s) if self.latencies_s else np.array([np.nan])
        return {
            "rule": self.rule,
            "utterances": self.utterances,
            "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            "latency_mean_s": round(float(np.mean(lat)), 3),
            "split_rate": round(self.split / max(1, self.utterances), 4),
            "lost_rate": round(self.lost / max(1, self.utterances), 4),
        }


def speech_end_s(x: np.ndarray, sample_rate: int) -> float:
    """Seconds to the last sample above 2 % of the peak."""
    a = np.abs(np.asarray(x, dtype=np.float32))
    loud = np.flatnonzero(a > 0.02 * float(a.max())) if a.size and a.max() > 0 else np.array([0])
    return float(loud[-1] + 1) / sample_rate


def measure_rule(rec: Any, name: str, endpoint: Any, utterances: Sequence[tuple[np.ndarray, int]]) -> EndpointResult:
    """One endpoint rule (an EndpointConfig) over ``utterances`` [(samples, rate)] on Recognizer ``rec``."""
    from wavstream.stream import Final

    latencies: list[float] = []
    split = lost = 0
    for x, sr in utterances:
        end = speech_end_s(x, sr)
        audio = np.concatenate([np.asarray(x, np.float32), np.zeros(int(TRAILING_SILENCE_S * sr), np.float32)])
        stream = rec.create_stream(endpoint=endpoint)
        block = max(1, int(BLOCK_S * sr))
        fed = 0
        finals: list[float] = []  # latency of each Final
        for i in range(0, len(audio), block):
            piece = audio[i : i + block]
            stream.accept_waveform(piece, sr)
            fed += len(piece)
            while stream.is_ready():
                t0 = time.perf_counter()
                events = rec.decode_stream(stream)
                dt = time.perf_counter() - t0
                finals += [fed / sr - end + dt for e in events if isinstance(e, Final) and e.text]
        stream.input_finished()
        while stream.is_ready():
            finals += [len(audio) / sr - end for e in rec.decode_stream(stream) if isinstance(e, Final) and e.text]
        if not finals:
            lost += 1
            continue
        split += len(finals) > 1
        latencies.append(finals[-1])  # the user waits for the text of the whole utterance
    return EndpointResult(name, tuple(latencies), split, lost, len(utterances))


# Sentences for when no dev set is given: read aloud by espeak-ng, some with a comma's pause.
FALLBACK_SENTENCES = (
    "turn on the kitchen lights", "what time is it in tokyo", "set a timer for ten minutes",
    "play some music, and turn it up", "the weather today is cold, with rain in the evening",
    "call my mother tomorrow morning", "open the garage door please", "remind me to buy milk, eggs and bread",
    "how far is the nearest station", "close the window in the bedroom", "the meeting starts at nine, not ten",
    "read me the latest news", "switch off the television", "add apples to the shopping list",
    "when does the library open on sunday", "lower the heating by two degrees",
)


def utterances_from(dev_tsv: Any, limit: int) -> list[tuple[np.ndarray, int]]:
    """Up to ``limit`` utterances of a corpus TSV (path, num_samples, text), or espeak-ng sentences if None."""
    import soundfile as sf

    if dev_tsv is not None:
        import csv
        from pathlib import Path

        root = Path(dev_tsv).parent
        with open(dev_tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))[:limit]
        return [sf.read(root / r["path"], dtype="float32") for r in rows]
    import io
    import subprocess

    out = []
    for text in FALLBACK_SENTENCES[:limit]:
        wav = subprocess.run(["espeak-ng", "-v", "en-us", "--stdout", text], capture_output=True, check=True).stdout
        out.append(sf.read(io.BytesIO(wav), dtype="float32"))
    return out


def run(settings: Any, bundle: Any, label: str, dev_tsv: Any) -> dict:
    """The bench section: every preset and two shorter waits, on the service model."""
    from wavstream.stream import Recognizer
    from wavstream.stream.endpoint import PRESETS, EndpointConfig

    utts = utterances_from(dev_tsv, settings.pick(8, 200))
    rec = Recognizer.from_bundle(bundle, intra_op_threads=1)
    rules = {f"{name} ({s:g} s)": EndpointConfig.preset(name) for name, s in PRESETS.items()}
    rules.update({f"rule2 {s:g} s": EndpointConfig.with_times(rule2_silence_s=s) for s in (0.4, 0.3)})
    rows = []
    for name, cfg in rules.items():
        row = measure_rule(rec, name, cfg, utts).summary()
        settings.log("endpoint", f"{label} {name}: p50 {row['latency_p50_s']:.2f} s, p95 {row['latency_p95_s']:.2f} s, "
                                 f"split {100 * row['split_rate']:.0f} %")
        rows.append(row)
    return {"model": label, "source": str(dev_tsv) if dev_tsv else "espeak-ng sentences", "rows": rows,
            "chunk_ms": round(1000 * rec.config.chunk_s)}
