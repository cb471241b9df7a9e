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

from typing import Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, load_bundle
from ..triton.sequences import SequenceClient, SequenceRequest, TritonEngineError, new_sequence_ids
from .base import Engine, StateShapeError, StepResult, StreamsFailedError

__all__ = ["TritonEngine", "TritonEngineError"]


class TritonEngine(Engine):
    """Runs the bundle's step in Triton model ``model`` at ``url`` (gRPC, HOST:PORT).

    The local bundle gives the chunk size, vocabulary and decoding; the Triton
    model must serve the same bundle (its ``bundle_fingerprint`` parameter is
    compared when present) at the same chunk size.
    Raises:
        EngineUnavailableError: no tritonclient, or the server or model is not there / not ready.
        BundleError: the Triton model serves another chunk size or bundle.
    A step in which Triton fails some streams and not others raises StreamsFailedError (the others'
    results in it); one in which all fail, TritonEngineError.
    """

    max_batch: Optional[int] = None  # no limit here: Triton splits what exceeds its max_batch_size

    def __init__(self, bundle: Union[Bundle, str], url: str = "127.0.0.1:8001", model: str = "wavstream", *,
                 timeout_s: float = 30.0) -> None:
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.sequences = SequenceClient(url, model, timeout_s=timeout_s)
        try:
            self._check_model(self.sequences.config)
        except BundleError:
            self.sequences.close()
            raise
        self._outputs = self.sequences.outputs
        self._started: set[int] = set()

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
        return new_sequence_ids(batch)

    def validate(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> np.ndarray:
        samples = self.validate_samples(samples)
        B = samples.shape[0]
        if len(states) != 1 or tuple(getattr(states[0], "shape", ())) != (B, 1) or states[0].dtype != np.uint64:
            found = [(tuple(getattr(s, "shape", ())), str(getattr(s, "dtype", "?"))) for s in states]
            raise StateShapeError(f"the triton engine's state is one ({B}, 1) uint64 array of sequence ids "
                                  f"(from its init_state), found {found}")
        return samples

    # ---------------------------------------------------------------- calls
    def _requests(self, rows: np.ndarray, ids: Sequence[int], *, end: bool) -> list[SequenceRequest]:
        return [SequenceRequest(sid, sid not in self._started, end, {"samples": rows[b : b + 1]})
                for b, sid in enumerate(ids)]

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        ids = [int(x) for x in states[0][:, 0]]
        answers = self.sequences.send(self._requests(samples, ids, end=False), self._outputs)
        # A failed stream is not held by Triton (never started, or forgotten): no END for it later.
        self._started.difference_update(ids[b] for b in answers.failed)
        if len(answers.failed) == len(ids):
            raise TritonEngineError(next(iter(answers.failed.values())))
        self._started.update(i for b, i in enumerate(ids) if b not in answers.failed)
        ok = next(r for r in answers.results if r is not None)

        def stack(name: str) -> Optional[np.ndarray]:
            if name not in self._outputs:
                return None
            # A failed row gets zeros of an answered row's shape: its stream is failed, not decoded.
            return np.concatenate([r.as_numpy(name) if r is not None else np.zeros_like(ok.as_numpy(name))
                                   for r in answers.results], axis=0)

        result = StepResult(features=stack("features"), logits=stack("logits"), codes=stack("codes"), states=[states[0]])
        if answers.failed:
            raise StreamsFailedError(answers.failed, result)
        return result

    def release(self, per_stream: Sequence[Sequence[np.ndarray]]) -> None:
        """Streams over: one silent END chunk for each started one, so Triton frees its slot now (not waited for)."""
        ids = [int(x) for st in per_stream for x in np.asarray(st[0]).reshape(-1) if int(x) in self._started]
        if ids:
            requests = self._requests(np.zeros((len(ids), self.chunk_samples), np.float32), ids, end=True)
            self._started.difference_update(ids)
            self.sequences.send(requests, self._outputs, wait=False)

    def close(self) -> None:
        self.sequences.close()

    def __repr__(self) -> str:
        return f"TritonEngine(triton://{self.url}/{self.model})"
