"""One gRPC stream to one Triton model with the sequence batcher: what TritonEngine and TritonRecognizer share.

``SequenceClient(url, model)`` connects, reads the model's configuration and
opens one bidirectional gRPC stream. ``send(requests)`` sends one request
per sequence (``SequenceRequest``: sequence id, START/END flags, input
arrays) and waits for all the answers. Needs ``tritonclient[grpc]``
(``pip install 'wavstream[triton]'``), imported only here. No torch.

Errors: a Triton error on the stream carries no request id (tritonclient
hands the callback only the message), so an answer is matched to its
request by elimination: the step waits until every request is answered by a
result or an error, and the requests left without a result are the ones that
failed. Only those fail (``Answers.failed``); the others have their results.
An error message that names a sequence id (wavstream's python models do) is
given to that sequence; otherwise each failed request gets the first error.
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import WavstreamError

__all__ = ["TritonEngineError", "SequenceRequest", "Answers", "SequenceClient", "import_client", "new_sequence_ids"]


class TritonEngineError(WavstreamError, RuntimeError):
    """Triton refused or failed a request, or did not answer in time."""


def import_client() -> Any:
    """tritonclient.grpc, or EngineUnavailableError naming the extra to install."""
    from ..engines.base import EngineUnavailableError

    try:
        import tritonclient.grpc as grpcclient  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EngineUnavailableError(
            f"the triton engine needs tritonclient: pip install 'wavstream[triton]' ({exc})") from exc
    return grpcclient


def new_sequence_ids(batch: int = 1) -> list[np.ndarray]:
    """``batch`` fresh sequence ids as a (batch, 1) uint64 array: random 63-bit numbers, so front ends on
    different machines do not collide; never 0, which Triton reads as "no sequence"."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return [np.array([[secrets.randbits(63) | 1] for _ in range(batch)], dtype=np.uint64)]


@dataclass
class SequenceRequest:
    """One request of one sequence: its inputs by name (each with the batch axis of 1)."""

    sequence_id: int
    start: bool
    end: bool
    inputs: dict[str, np.ndarray]


@dataclass
class Answers:
    """The answers to one ``send``, in request order: a result, or None where the request failed."""

    results: list[Any]
    failed: dict[int, str] = field(default_factory=dict)  # request index -> why


_TRITON_DTYPE = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
                 np.dtype(np.uint64): "UINT64", np.dtype(object): "BYTES"}


_SEQ = re.compile(r"sequence (?:id )?(\d+)")


class SequenceClient:
    """gRPC client of Triton model ``model`` at ``url`` (HOST:PORT) with one open stream.

    Raises EngineUnavailableError: no tritonclient, or the server or model is not there / not ready.
    """

    def __init__(self, url: str, model: str, *, timeout_s: float = 30.0) -> None:
        from ..engines.base import EngineUnavailableError

        grpc = import_client()
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self._grpc = grpc
        self.client = grpc.InferenceServerClient(url)
        try:
            ready = self.client.is_model_ready(model)
            cfg = self.client.get_model_config(model, as_json=True)["config"] if ready else None
        except Exception as exc:  # InferenceServerException: connection refused, unknown model
            self.client.close()
            raise EngineUnavailableError(f"Triton at {url} cannot be used for model {model!r}: {exc}") from exc
        if cfg is None:
            self.client.close()
            raise EngineUnavailableError(f"Triton at {url}: model {model!r} is not ready (loaded?)")
        self.config: dict = cfg
        self.inputs: dict[str, dict] = {i["name"]: i for i in cfg.get("input", [])}
        self.outputs: list[str] = [o["name"] for o in cfg.get("output", [])]
        self.parameters: dict[str, str] = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._results: dict[str, Any] = {}
        self._errors: list[str] = []
        self._waiting: set[str] = set()
        self._start_stream()

    def _start_stream(self) -> None:
        """Open the gRPC stream from a daemon thread: tritonclient's reader thread inherits daemon status,
        so a command that never calls close() still exits (a non-daemon reader would keep it alive)."""
        from ..engines.base import EngineUnavailableError

        failure: list[BaseException] = []

        def start() -> None:
            try:
                self.client.start_stream(callback=self._on_response)
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        t = threading.Thread(target=start, name="wavstream-triton-start", daemon=True)
        t.start()
        t.join()
        if failure:
            self.client.close()
            raise EngineUnavailableError(f"Triton at {self.url}: cannot open a gRPC stream: {failure[0]}") from failure[0]

    def _broken(self) -> bool:
        """The gRPC stream is gone (closed, or failed: tritonclient marks it inactive and sends no more)."""
        stream = getattr(self.client, "_stream", None)
        return stream is None or not getattr(stream, "_active", True)

    def _reopen(self) -> None:
        """A new gRPC stream after one broke. Triton keys sequences by id, not by connection, so the
        streams it still holds go on over the new one (those it lost fail one by one, by name)."""
        try:
            self.client.stop_stream(cancel_requests=True)
        except Exception:  # the old stream is gone either way
            pass
        self._start_stream()

    @property
    def idle_s(self) -> Optional[float]:
        """How long Triton keeps a silent sequence (the model's max_sequence_idle_microseconds), if it says."""
        us = self.config.get("sequence_batching", {}).get("max_sequence_idle_microseconds")
        return int(us) / 1e6 if us else None

    @property
    def where(self) -> str:
        return f"Triton model {self.model!r} at {self.url}"

    def _on_response(self, result: Any, error: Any) -> None:
        """gRPC thread: file the result under its request id, or the error for the waiting step."""
        with self._cv:
            if error is not None:
                self._errors.append(str(error))
            else:
                rid = result.get_response().id
                if rid in self._waiting:
                    self._results[rid] = result
            self._cv.notify_all()

    def send(self, requests: Sequence[SequenceRequest], outputs: Sequence[str], *, wait: bool = True) -> Answers:
        """Send ``requests`` on the stream; with ``wait``, wait for all their answers (see the module docstring).

        A stream that broke (Triton restarted, the network failed) is reopened first. Raises
        TritonEngineError when a request cannot be sent, EngineUnavailableError when no stream can be opened.
        """
        grpc = self._grpc
        rids: list[str] = []
        if self._broken():
            self._reopen()
        with self._cv:
            self._errors.clear()
        for req in requests:
            inputs = []
            for name, arr in req.inputs.items():
                inp = grpc.InferInput(name, list(arr.shape), _TRITON_DTYPE[arr.dtype])
                inp.set_data_from_numpy(arr)
                inputs.append(inp)
            rid = f"{next(self._ids)}"
            if wait:
                with self._cv:
                    self._waiting.add(rid)
                rids.append(rid)
            try:
                self.client.async_stream_infer(
                    self.model, inputs, request_id=rid, sequence_id=int(req.sequence_id), sequence_start=req.start,
                    sequence_end=req.end, outputs=[grpc.InferRequestedOutput(n) for n in outputs])
            except Exception as exc:  # InferenceServerException: the stream is no longer usable
                with self._cv:
                    self._waiting.difference_update(rids)
                raise TritonEngineError(f"{self.where}: {exc}") from exc
        if not wait:
            return Answers([])

        ids = {int(r.sequence_id) for r in requests}

        def ours(e: str) -> bool:
            # An error naming another sequence answers an earlier, unwaited send (an END), not this one.
            m = _SEQ.search(e)
            return m is None or int(m.group(1)) in ids

        def answered() -> bool:
            # A broken stream answers nothing more: what is unanswered then has failed.
            return (sum(r in self._results for r in rids) + sum(map(ours, self._errors)) >= len(rids)
                    or (bool(self._errors) and self._broken()))

        with self._cv:
            done = self._cv.wait_for(answered, self.timeout_s)
            results = [self._results.pop(r, None) for r in rids]
            self._waiting.difference_update(rids)
            errors = [e for e in self._errors if ours(e)]
        missing = [i for i, r in enumerate(results) if r is None]
        failed: dict[int, str] = {}
        if missing:
            by_seq = {}
            for e in errors:
                m = _SEQ.search(e)
                if m:
                    by_seq.setdefault(int(m.group(1)), e)
            fallback = errors[0] if errors else f"no answer in {self.timeout_s:g} s"
            for i in missing:
                failed[i] = f"{self.where}: {by_seq.get(int(requests[i].sequence_id), fallback)}"
        if not done and not errors:
            failed = {i: f"{self.where} did not answer {len(missing)} of {len(rids)} requests in {self.timeout_s:g} s"
                      for i in missing}
        return Answers(results, failed)

    def close(self) -> None:
        try:
            self.client.stop_stream()
        finally:
            self.client.close()
