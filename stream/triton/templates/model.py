"""wavstream's Triton python-backend model: one bundle, many streams, one batched step per execute().

Written by ``wavstream triton-repo``; the bundle it serves is the folder
``bundle/`` next to this file, at the latency named by the ``latency_ms``
parameter of config.pbtxt. Each request is one chunk of one stream: the
sequence batcher hands over its ``CORRID`` (which stream), ``START`` (a new
stream: zero state) and ``END`` (forget the stream after this chunk). The
states of every live stream stay here, in this one process, so the model
runs with a single instance (config.pbtxt says so). Streams idle longer than
the sequence batcher's ``max_sequence_idle_microseconds`` are forgotten, as
Triton forgets them. Needs the torch-free ``wavstream`` package (numpy,
onnxruntime) in the Python environment Triton's python backend runs, or its
folder in $WAVSTREAM_TRITON_PYTHONPATH (the stub ignores PYTHONPATH).
"""

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
        from wavstream.stream.engines.base import stack_states, unstack_states
        from wavstream.stream.engines.ort import OrtEngine
        from wavstream.stream.triton.backend_args import read_backend_args

        self._stack, self._unstack = stack_states, unstack_states
        a = read_backend_args(args)
        self.engine = OrtEngine(a.bundle, device="cpu", intra_op_threads=a.threads)
        self.output_names = [o["name"] for o in a.config["output"]]
        self.idle_s = a.idle_s
        self.streams = {}  # CORRID -> [states (each (1, ...)), last use (monotonic s)]

    def _scalar(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else tensor.as_numpy().reshape(-1)[0]

    def execute(self, requests):
        now = time.monotonic()
        for corr in [c for c, (_, t) in self.streams.items() if now - t > self.idle_s]:
            del self.streams[corr]
        responses = [None] * len(requests)
        rows, chunks, states, meta = [], [], [], []
        for i, request in enumerate(requests):
            corr = self._scalar(request, "CORRID")
            start = bool(self._scalar(request, "START"))
            end = bool(self._scalar(request, "END"))
            samples = pb_utils.get_input_tensor_by_name(request, "samples").as_numpy()
            if corr is None:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError("request has no CORRID (sequence id)"))
                continue
            corr = int(corr)
            if start:
                st = self.engine.init_state(1)
            elif corr in self.streams:
                st = self.streams[corr][0]
            else:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"sequence {corr} is unknown here: not started, ended, or idle longer than {self.idle_s:g} s"))
                continue
            if samples.shape != (1, self.engine.chunk_samples):
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"samples must be (1, {self.engine.chunk_samples}), found {samples.shape}"))
                continue
            rows.append(i)
            chunks.append(samples)
            states.append(st)
            meta.append((corr, end))
        if rows:
            # One engine call for every stream of this batch: the states stack on the batch axis.
            res = self.engine.step(np.concatenate(chunks), self._stack(states))
            new = self._unstack(list(res.states), len(rows))
            outs = {"features": res.features, "logits": res.logits, "codes": res.codes}
            for b, (i, (corr, end)) in enumerate(zip(rows, meta)):
                if end:
                    self.streams.pop(corr, None)
                else:
                    # copy: a row view would keep the whole batch's arrays alive
                    self.streams[corr] = [[s.copy() for s in new[b]], now]
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(outs[n][b : b + 1])) for n in self.output_names]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
        return responses

    def finalize(self):
        self.streams.clear()
