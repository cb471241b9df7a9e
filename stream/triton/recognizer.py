"""TritonRecognizer: streams decoded inside Triton, by a front end that has no model.

The Triton model is the decoding one that ``wavstream triton-repo --decode``
writes (``NAME_decode``, templates/decode_model.py): it keeps each stream's
model state, CTC decoder and endpointer, keyed by the sequence id, and
answers every chunk with the stream's text events. Here a stream keeps only
its audio queue (resampling to 16 kHz happens here) and its sequence id.

``TritonRecognizer`` has the Recognizer's interface (``create_stream``,
``decode_streams``, ``feed``/``finish``, ``transcribe``, listeners), so the
server's Batcher and the commands use it as they use a Recognizer. The
bundle's config.json comes from the Triton model (its ``bundle_config``
parameter): chunk size, frame rate and vocabulary are the model's own.
Decoding (greedy or beam) is the one the repository was written with;
endpointing, hotwords and word times are per stream, sent with the stream's
first chunk. Needs ``tritonclient[grpc]``. No torch.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, parse_config
from ..ctc import StreamingCtcDecoder
from ..endpoint import EndpointConfig
from ..engines.base import Engine, StepResult, StreamsFailedError
from ..events import Event, Features, Final, Partial, Word
from ..hotwords import Hotword
from ..recognizer import DecodingConfig, Recognizer, Stream, StreamState
from .sequences import SequenceClient, SequenceRequest, TritonEngineError, new_sequence_ids

__all__ = ["TritonRecognizer", "TritonStream"]


class _SequenceIds(Engine):
    """The engine face of a decoding model: a stream's state is its sequence id; steps run in Triton,
    through ``TritonRecognizer.decode_streams``, never through ``step``."""

    max_batch: Optional[int] = None

    def __init__(self, bundle: Bundle, sequences: SequenceClient) -> None:
        super().__init__(bundle)
        self.sequences = sequences
        self.started: set[int] = set()  # ids Triton holds a stream for

    def init_state(self, batch: int = 1) -> list[np.ndarray]:
        return new_sequence_ids(batch)

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        raise TritonEngineError(f"{self.sequences.where} decodes in Triton: use TritonRecognizer.decode_streams")

    def release(self, per_stream: Sequence[Sequence[np.ndarray]]) -> None:
        """Streams cut off before their end: an END with no audio each, so Triton forgets them (not waited for)."""
        ids = [int(x) for st in per_stream for x in np.asarray(st[0]).reshape(-1) if int(x) in self.started]
        if ids:
            self.started.difference_update(ids)
            self.sequences.send([_request(sid, False, True, np.zeros(self.chunk_samples, np.float32), 0, b"")
                                 for sid in ids], ["events"], wait=False)

    def close(self) -> None:
        self.sequences.close()


def _request(sid: int, start: bool, end: bool, chunk: np.ndarray, real: int, options: bytes) -> SequenceRequest:
    return SequenceRequest(sid, start, end, {"samples": chunk.reshape(1, -1),
                                             "real_samples": np.array([[real]], np.int32),
                                             "options": np.array([[options]], dtype=np.object_)})


class TritonStream(Stream):
    """One stream whose decoding runs in Triton: the audio queue here, the rest there."""

    def __init__(self, rec: "TritonRecognizer", *, endpoint: Optional[EndpointConfig] = None,
                 hotwords: Optional[Sequence[Union[str, Hotword]]] = None, words: bool = True) -> None:
        super().__init__(rec, endpoint=endpoint, hotwords=None)
        ep = self.endpointer.config
        self.options: dict[str, Any] = {
            "endpoint": {"enabled": ep.enabled, "rules": [[r.must_contain_nonsilence, r.min_trailing_silence_s,
                                                           r.min_utterance_length_s] for r in (ep.rule1, ep.rule2, ep.rule3)]},
            "words": words,
        }
        if hotwords:
            self.options["hotwords"] = [h if isinstance(h, str) else f"{h.phrase}:{h.score}" for h in hotwords]
        self._text = ""

    @property
    def sequence_id(self) -> int:
        return int(np.asarray(self.states[0]).reshape(-1)[0])

    @property
    def text(self) -> str:
        """Partial text of the current utterance, as Triton last sent it."""
        return self._text


class TritonRecognizer(Recognizer):
    """A Recognizer whose streams are decoded by Triton model ``model`` at ``url`` (gRPC HOST:PORT).

    Raises:
        EngineUnavailableError: no tritonclient, or the server or model is not there / not ready.
        BundleError: the model is not a decoding model written by ``wavstream triton-repo --decode``.
    ``decode_streams`` raises StreamsFailedError when Triton fails some streams (they end; the others
    have their events) and TritonEngineError when it fails them all.
    """

    def __init__(self, url: str = "127.0.0.1:8001", model: str = "wavstream_decode", *,
                 endpoint: Optional[EndpointConfig] = None, emit_features: bool = True, words: bool = True,
                 timeout_s: float = 30.0) -> None:
        sequences = SequenceClient(url, model, timeout_s=timeout_s)
        try:
            bundle, decoding = _model_bundle(sequences)
        except BundleError:
            sequences.close()
            raise
        self.sequences = sequences
        self.words = words
        super().__init__(_SequenceIds(bundle, sequences), decoding=decoding, endpoint=endpoint,
                         emit_features=emit_features)
        self._outputs = ["events"] + (["features"] if emit_features else [])

    def _make_decoder(self, hotwords: Optional[Sequence[Union[str, Hotword]]] = None) -> Optional[StreamingCtcDecoder]:
        # No decoder here: Triton decodes. Hotwords are still built once, so a bad list fails now, by name.
        if hotwords:
            super()._make_decoder(hotwords)
        return None

    def create_stream(self, *, endpoint: Optional[EndpointConfig] = None,
                      hotwords: Optional[Sequence[Union[str, Hotword]]] = None) -> TritonStream:
        """A new stream (see Recognizer.create_stream). Raises HotwordError for a bad hotword list."""
        self._make_decoder(hotwords)
        return TritonStream(self, endpoint=endpoint, hotwords=hotwords, words=self.words)

    def decode_streams(self, streams: Sequence[Stream]) -> list[list[Event]]:
        """One chunk of every ready stream, sent to Triton at once (Triton batches their acoustic step)."""
        results: list[list[Event]] = [[] for _ in streams]
        failed: dict[int, str] = {}
        todo = [i for i, s in enumerate(streams) if s.is_ready()]
        engine: _SequenceIds = self.engine  # type: ignore[assignment]
        requests = []
        for i in todo:
            s = streams[i]
            assert isinstance(s, TritonStream), "TritonRecognizer decodes only its own streams"
            chunk, real = s.take_chunk()
            sid = s.sequence_id
            start = sid not in engine.started
            requests.append(_request(sid, start, s.finished and s.queued_samples == 0, chunk, real,
                                     json.dumps(s.options).encode() if start else b""))
        answers = self.sequences.send(requests, self._outputs) if requests else None
        if answers is not None and len(answers.failed) == len(requests):
            for i, req in zip(todo, requests):
                streams[i].state = StreamState.DONE
                engine.started.discard(req.sequence_id)  # not held by Triton: no END for it later
            raise TritonEngineError(next(iter(answers.failed.values())))
        for k, i in enumerate(todo):
            s, req = streams[i], requests[k]
            assert answers is not None and isinstance(s, TritonStream)
            result = answers.results[k]
            if result is None:
                failed[i] = answers.failed[k]
                s.state = StreamState.DONE
                engine.started.discard(req.sequence_id)
                continue
            engine.started.add(req.sequence_id)
            results[i] = self._events(s, json.loads(result.as_numpy("events").reshape(-1)[0]), result)
            if s.done:
                engine.started.discard(req.sequence_id)  # Triton forgot it at END
        for evs in results:
            self._dispatch(evs)
        if failed:
            raise StreamsFailedError(failed, results)
        return results

    def _events(self, s: TritonStream, body: dict, result: Any) -> list[Event]:
        """One answer's JSON (templates/decode_model.py) -> the stream's events; moves the stream on."""
        events: list[Event] = []
        frames = int(body["frames"])
        if self.emit_features and frames:
            events.append(Features(np.array(result.as_numpy("features")[0, :frames], copy=True), s.frames_done))
        for e in body["events"]:
            if e["type"] == "partial":
                s._text = e["text"]
                events.append(Partial(e["text"], int(e["segment"])))
            else:
                s._text = ""
                words = tuple(Word(w, float(a), float(b), float(c)) for w, a, b, c in e.get("words", ()))
                events.append(Final(e["text"], float(e["start"]), float(e["end"]), int(e["segment"]), words))
                s.segment = int(e["segment"]) + 1
        s.frames_done += frames
        if body["done"]:
            s.state = StreamState.DONE
        return events

    def __repr__(self) -> str:
        return f"TritonRecognizer(triton://{self.sequences.url}/{self.sequences.model}, chunk={self.config.chunk_ms} ms)"


def _model_bundle(sequences: SequenceClient) -> tuple[Bundle, DecodingConfig]:
    """The bundle config (and decoding) a decoding model was written with, from its parameters."""
    params = sequences.parameters
    if "events" not in sequences.outputs or "bundle_config" not in params:
        raise BundleError(f"{sequences.where} is not a decoding model (outputs {sequences.outputs}); write one with "
                          f"wavstream triton-repo --decode (it is named NAME_decode)")
    where = f"triton://{sequences.url}/{sequences.model}"
    try:
        raw = json.loads(base64.b64decode(params["bundle_config"]))
    except ValueError as exc:
        raise BundleError(f"{where}: its bundle_config parameter is not base64 JSON ({exc})") from exc
    latency = int(params["latency_ms"]) if params.get("latency_ms") else None
    config = parse_config(raw, latency, where)
    decoding = DecodingConfig(params.get("decoder") or "greedy", int(params.get("beam_size") or 8))
    return Bundle(path=Path(sequences.model), config=config, tokens=tuple(config.vocab)), decoding
