"""Triton engine: the streaming step runs in a shared Triton Inference Server.

The model is one that ``wavstream triton-repo`` wrote (python backend, or
onnxruntime/tensorrt with implicit state): Triton's sequence batcher keeps
each stream's state, keyed by a sequence id. Here a stream's "state" is only
that id, a (1, 1) uint64 array, so the Recognizer, the server's Batcher and
``stack_states`` handle it like any other state. One ``step`` sends one
request per stream over one gRPC stream and waits for all of them; Triton
batches the requests of every front end that shares it.

Sequence ids are random 63-bit numbers, so front ends on different machines
do not collide. The first request of a stream carries START; when a stream is
over, ``release`` sends one more (silent) chunk with END so Triton frees its
slot at once (the server's Batcher releases sessions cut off midway too;
streams of a front end that died are forgotten after the model's
``max_sequence_idle_microseconds``). Needs ``tritonclient[grpc]``
(``pip install 'wavstream[triton]'``); imported only when this engine is
built. No torch.
"""

from __future__ import annotations

import itertools
import secrets
import threading
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, load_bundle
from ..errors import WavstreamError
from .base import Engine, EngineUnavailableError, StateShapeError, StepResult

__all__ = ["TritonEngine", "TritonEngineError"]


class TritonEngineError(WavstreamError, RuntimeError):
    """Triton refused or failed a request, or did not answer in time."""


def _import_client() -> Any:
    try:
        import tritonclient.grpc as grpcclient  # type: ignore[import-not-found]
    except ImportError as exc:
        raise EngineUnavailableError(
            f"the triton engine needs tritonclient: pip install 'wavstream[triton]' ({exc})") from exc
    return grpcclient


class TritonEngine(Engine):
    """Runs the bundle's step in Triton model ``model`` at ``url`` (gRPC, HOST:PORT).

    The local bundle gives the chunk size, vocabulary and decoding; the Triton
    model must serve the same bundle (its ``bundle_fingerprint`` parameter is
    compared when present) at the same chunk size.
    Raises:
        EngineUnavailableError: no tritonclient, or the server or model is not there / not ready.
        BundleError: the Triton model serves another chunk size or bundle.
    """

    max_batch: Optional[int] = None  # no limit here: Triton splits what exceeds its max_batch_size

    def __init__(self, bundle: Union[Bundle, str], url: str = "127.0.0.1:8001", model: str = "wavstream", *,
                 timeout_s: float = 30.0) -> None:
        grpc = _import_client()
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
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
        try:
            self._check_model(cfg)
        except BundleError:
            self.client.close()
            raise
        self._outputs = [o["name"] for o in cfg.get("output", [])]
        self._started: set[int] = set()
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._results: dict[str, Any] = {}
        self._errors: list[str] = []
        self._waiting: set[str] = set()
        self._start_stream()

    def _start_stream(self) -> None:
        """Open the gRPC stream from a daemon thread: tritonclient's reader thread inherits daemon status,
        so a command that never calls close() still exits (a non-daemon reader would keep it alive)."""
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

    def _check_model(self, cfg: dict) -> None:
        where = f"Triton model {self.model!r} at {self.url}"
        inputs = {i["name"]: i for i in cfg.get("input", [])}
        if "samples" not in inputs:
            raise BundleError(f"{where} has no 'samples' input (inputs: {sorted(inputs)}); was it written by wavstream triton-repo?")
        dims = [int(d) for d in inputs["samples"].get("dims", [])]
        if dims != [self.chunk_samples]:
            raise BundleError(f"{where} takes chunks of {dims} samples, the local bundle {self.bundle.path} "
                              f"{self.chunk_samples} ({self.config.chunk_ms} ms); use the same bundle and --latency-ms")
        outputs = {o["name"] for o in cfg.get("output", [])}
        need = {"features"} | ({"logits"} if self.config.has_logits else set())
        if not need <= outputs:
            raise BundleError(f"{where} lacks outputs {sorted(need - outputs)} (has {sorted(outputs)})")
        params = {k: v.get("string_value") for k, v in cfg.get("parameters", {}).items()}
        theirs = params.get("bundle_fingerprint")
        if theirs:
            from ..triton.repo import bundle_fingerprint

            mine = bundle_fingerprint(self.bundle)
            if theirs != mine:
                raise BundleError(f"{where} serves another bundle (config.json fingerprint {theirs}, "
                                  f"local {self.bundle.path} has {mine})")

    # --------------------------------------------------------------- state
    def init_state(self, batch: int = 1) -> list[np.ndarray]:
        """New streams: one fresh sequence id each, as a (batch, 1) uint64 array."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        # Never 0: Triton reads sequence id 0 as "no sequence".
        return [np.array([[secrets.randbits(63) | 1] for _ in range(batch)], dtype=np.uint64)]

    def validate(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        samples = self.validate_samples(samples)
        B = samples.shape[0]
        if len(states) != 1 or tuple(getattr(states[0], "shape", ())) != (B, 1) or states[0].dtype != np.uint64:
            found = [(tuple(getattr(s, "shape", ())), str(getattr(s, "dtype", "?"))) for s in states]
            raise StateShapeError(f"the triton engine's state is one ({B}, 1) uint64 array of sequence ids "
                                  f"(from its init_state), found {found}")
        return samples

    # ---------------------------------------------------------------- calls
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

    def _send(self, rows: np.ndarray, ids: Sequence[int], *, end: bool, wait: bool) -> list[Any]:
        grpc = self._grpc
        rids = []
        with self._cv:
            self._errors.clear()
        for b, sid in enumerate(ids):
            inp = grpc.InferInput("samples", [1, self.chunk_samples], "FP32")
            inp.set_data_from_numpy(rows[b : b + 1])
            rid = f"{next(self._ids)}"
            if wait:
                with self._cv:
                    self._waiting.add(rid)
                rids.append(rid)
            self.client.async_stream_infer(
                self.model, [inp], request_id=rid, sequence_id=int(sid), sequence_start=int(sid) not in self._started,
                sequence_end=end, outputs=[grpc.InferRequestedOutput(n) for n in self._outputs])
        if not wait:
            return []
        with self._cv:
            done = self._cv.wait_for(lambda: self._errors or all(r in self._results for r in rids), self.timeout_s)
            results = [self._results.pop(r, None) for r in rids]
            self._waiting.difference_update(rids)
            errors = list(self._errors)
        if errors:
            raise TritonEngineError(f"Triton model {self.model!r} at {self.url}: {errors[0]}")
        if not done:
            raise TritonEngineError(f"Triton model {self.model!r} at {self.url} did not answer "
                                    f"{sum(r is None for r in results)} of {len(rids)} requests in {self.timeout_s:g} s")
        return results

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        ids = [int(x) for x in states[0][:, 0]]
        results = self._send(samples, ids, end=False, wait=True)
        self._started.update(ids)

        def stack(name: str) -> Optional[np.ndarray]:
            if name not in self._outputs:
                return None
            return np.concatenate([r.as_numpy(name) for r in results], axis=0)

        return StepResult(features=stack("features"), logits=stack("logits"), codes=stack("codes"), states=[states[0]])

    def release(self, per_stream: Sequence[Sequence[np.ndarray]]) -> None:
        """Streams over: one silent END chunk for each started one, so Triton frees its slot now (not waited for)."""
        ids = [int(x) for st in per_stream for x in np.asarray(st[0]).reshape(-1) if int(x) in self._started]
        if ids:
            self._send(np.zeros((len(ids), self.chunk_samples), np.float32), ids, end=True, wait=False)
            self._started.difference_update(ids)

    def close(self) -> None:
        try:
            self.client.stop_stream()
        finally:
            self.client.close()

    def __repr__(self) -> str:
        return f"TritonEngine(triton://{self.url}/{self.model})"
