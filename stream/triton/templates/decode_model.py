"""wavstream's Triton python-backend model that also decodes: chunks in, text events out.

Written by ``wavstream triton-repo --decode``; the bundle it serves is the
folder ``bundle/`` next to this file, at the latency named by the
``latency_ms`` parameter. Each stream (Triton sequence, keyed by ``CORRID``)
is one wavstream ``Stream``: the model's state, the CTC decoder and the
endpointer all live here, so a front end needs no model at all
(``TritonRecognizer``). One ``execute()`` runs one batched acoustic step for
every stream in it (``Recognizer.decode_streams``); decoding and endpointing
run per stream.

Inputs of a request (one chunk of one stream):
  samples       FP32 (1, chunk_samples): 16 kHz audio, zero-padded after the real samples
  real_samples  INT32 (1, 1): how many of them are real (a whole chunk, except at the end)
  options       BYTES (1, 1), read at START (other requests send b""): JSON {"endpoint": {"enabled": bool,
                "rules": three [must_contain_nonsilence, min_trailing_silence_s, min_utterance_length_s]},
                "hotwords": ["phrase" or "phrase:score", ...], "words": false to leave word times out of
                finals (default true)}; each key optional (the model's defaults)
  START / END / CORRID from the sequence batcher. END means the input is over: the chunk is decoded,
  the last utterance finalised, and the stream forgotten.
Outputs:
  events        BYTES (1, 1): JSON {"frames": real frames of this chunk, "done": the stream is over,
                "events": [{"type": "partial", "text", "segment"} | {"type": "final", "text", "start",
                "end", "segment", "endpoint": false for the stream's last Final when the end of input closed
                it, else true, "words": [[word, start, end, confidence], ...]}]}; times in seconds of the
                stream's audio
  features      FP32 (1, chunk_frames, feature_dim): the chunk's features (rows past "frames" are padding)

Streams idle longer than the sequence batcher's ``max_sequence_idle_microseconds``
are forgotten, as Triton forgets them. One instance (the streams live in
this process). Needs the torch-free ``wavstream`` package in the Python
environment of Triton's python backend, or its folder in
$WAVSTREAM_TRITON_PYTHONPATH (the stub ignores PYTHONPATH).
"""

import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        for path in reversed(os.environ.get("WAVSTREAM_TRITON_PYTHONPATH", "").split(os.pathsep)):
            if path and path not in sys.path:
                sys.path.insert(0, path)
        from wavstream.stream.endpoint import EndpointConfig, EndpointRule
        from wavstream.stream.engines.ort import OrtEngine
        from wavstream.stream.events import Features, Final, Partial
        from wavstream.stream.recognizer import DecodingConfig, Recognizer
        from wavstream.stream.triton.backend_args import read_backend_args

        self._EndpointConfig, self._EndpointRule, self._Features, self._Final, self._Partial = (
            EndpointConfig, EndpointRule, Features, Final, Partial)
        a = read_backend_args(args)
        decoding = DecodingConfig(a.params.get("decoder") or "greedy", int(a.params.get("beam_size") or 8))
        self.rec = Recognizer(OrtEngine(a.bundle, device="cpu", intra_op_threads=a.threads), decoding=decoding,
                              emit_features=True)
        self.chunk = a.bundle.config.chunk_samples
        self.feature_shape = (a.bundle.config.chunk_frames, a.bundle.config.feature_dim)
        self.idle_s = a.idle_s
        self.streams = {}  # CORRID -> [Stream, last use (monotonic s), words wanted]

    def _input(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy()

    def _new_stream(self, options):
        raw = options.reshape(-1)[0] if options is not None else b""
        opts = json.loads(raw) if raw else {}
        ep = opts.get("endpoint")
        endpoint = None
        if ep is not None:
            rules = [self._EndpointRule(bool(m), float(s), float(n)) for m, s, n in ep["rules"]]
            if len(rules) != 3:
                raise ValueError(f"endpoint needs 3 rules, found {len(rules)}")
            endpoint = self._EndpointConfig(bool(ep["enabled"]), *rules)
        return self.rec.create_stream(endpoint=endpoint, hotwords=opts.get("hotwords") or None), bool(opts.get("words", True))

    def _take(self, request, now):
        """(corr, stream, end) for a request, its audio accepted; or an error message."""
        corr = self._input(request, "CORRID")
        if corr is None:
            return "request has no CORRID (sequence id)"
        corr = int(corr.reshape(-1)[0])
        start = bool(self._input(request, "START").reshape(-1)[0])
        end = bool(self._input(request, "END").reshape(-1)[0])
        samples = self._input(request, "samples")
        real = int(self._input(request, "real_samples").reshape(-1)[0])
        if samples.shape != (1, self.chunk) or not 0 <= real <= self.chunk:
            return f"sequence {corr}: samples must be (1, {self.chunk}) with 0..{self.chunk} real, found {samples.shape}, {real}"
        if start:
            try:
                stream, words = self._new_stream(self._input(request, "options"))
            except (ValueError, KeyError, TypeError) as exc:  # bad JSON, endpoint times or hotwords
                return f"sequence {corr}: bad options: {exc}"
            self.streams[corr] = [stream, now, words]
        elif corr in self.streams:
            stream = self.streams[corr][0]
            self.streams[corr][1] = now
        else:
            return f"sequence {corr} is unknown here: not started, ended, or idle longer than {self.idle_s:g} s"
        if stream.finished:
            return f"sequence {corr}: a chunk after the one with END"
        stream.accept_waveform(samples[0, :real], 16000)
        if end:
            stream.input_finished()
        return corr, stream, end, self.streams[corr][2]

    def _encode(self, stream, events, ended_by_input, words):
        out, feats, frames = [], np.zeros((1,) + self.feature_shape, np.float32), 0
        finals = [e for e in events if isinstance(e, self._Final)]
        for e in events:
            if isinstance(e, self._Features):
                frames = e.num_frames
                feats[0, :frames] = e.frames
            elif isinstance(e, self._Partial):
                out.append({"type": "partial", "text": e.text, "segment": e.segment})
            elif isinstance(e, self._Final):
                # Only the last Final of the chunk that ends the stream can be the input's end; the others
                # were cut by an endpoint rule.
                by_input = ended_by_input and e is finals[-1]
                out.append({"type": "final", "text": e.text, "start": e.start, "end": e.end, "segment": e.segment,
                            "endpoint": not by_input,
                            "words": [[w.word, w.start, w.end, w.confidence] for w in e.words] if words else []})
        body = json.dumps({"frames": frames, "done": stream.done, "events": out})
        return pb_utils.Tensor("events", np.array([[body.encode()]], dtype=np.object_)), pb_utils.Tensor("features", feats)

    def execute(self, requests):
        now = time.monotonic()
        for corr in [c for c, held in self.streams.items() if now - held[1] > self.idle_s]:
            del self.streams[corr]
        responses = [None] * len(requests)
        pending = []  # (request index, corr, stream, end, words)
        for i, request in enumerate(requests):
            taken = self._take(request, now)
            if isinstance(taken, str):
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(taken))
            else:
                pending.append((i,) + taken)
        # The sequence batcher gives one request per sequence per batch; if one ever came twice, its
        # second chunk waits for the next round (a stream decodes its chunks in order, one per step).
        while pending:
            seen, round_, later = set(), [], []
            for item in pending:
                (later if item[1] in seen else round_).append(item)
                seen.add(item[1])
            # One batched acoustic step for every stream of the round; decoding per stream.
            results = self.rec.decode_streams([item[2] for item in round_])
            for (i, corr, stream, end, words), events in zip(round_, results):
                if end:
                    self.streams.pop(corr, None)
                tensors = list(self._encode(stream, events, end, words))
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            pending = later
        return responses

    def finalize(self):
        self.streams.clear()
