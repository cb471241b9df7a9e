"""ONNX Runtime engine (CPU; CUDA when onnxruntime-gpu provides it)."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, IOSpec, check_graph_io, load_bundle, ort_type_to_dtype
from .base import Engine, EngineUnavailableError, StepResult

__all__ = ["OrtEngine", "BACK_TO_BACK_SPIN_US", "session_options"]

# How long pool threads busy-wait for more work (µs) where steps run back to back
# (a file as fast as possible, a benchmark): long enough to span the gap between
# two ops of one step, so each parallel op finds its helper awake instead of
# waking it (wav2vec's 320 ms step on 2 threads: 1.92 -> 1.51 ms), and short
# enough to cost nothing between steps. See docs/bench.md "Threads that spin".
BACK_TO_BACK_SPIN_US = 100


def session_options(intra_op_threads: Optional[int] = None, inter_op_threads: Optional[int] = None,
                    spin_us: Optional[int] = 0) -> Any:
    """onnxruntime SessionOptions as OrtEngine sets them (also for the bench's offline sessions).

    spin_us: 0 = pool threads never spin; N > 0 = they spin up to N µs; None =
    onnxruntime's default (spins without a bound, a core each between steps).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if intra_op_threads is not None:
        opts.intra_op_num_threads = int(intra_op_threads)
    if inter_op_threads is not None:
        opts.inter_op_num_threads = int(inter_op_threads)
    if spin_us is not None:
        if spin_us < 0:
            raise ValueError(f"spin_us must be >= 0 or None, got {spin_us}")
        for pool in ("intra_op", "inter_op"):
            opts.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spin_us else "0")
            if spin_us:
                opts.add_session_config_entry(f"session.{pool}.spin_duration_us", str(int(spin_us)))
    opts.log_severity_level = 3  # errors only; a bundle problem is reported by us
    return opts


def _providers(device: str, available: Sequence[str]) -> list[str]:
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise EngineUnavailableError(
                "device='cuda' asked for, but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {list(available)}); install onnxruntime-gpu or use device='cpu'"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


class OrtEngine(Engine):
    """Runs a bundle's ``model.onnx`` (or ``model.int8.onnx``) with onnxruntime.

    Args:
        bundle: a loaded Bundle or a bundle folder path.
        quantized: use ``model.int8.onnx`` instead of ``model.onnx``.
        device: "auto" (CUDA if present, else CPU), "cpu" or "cuda".
        intra_op_threads / inter_op_threads: onnxruntime thread pools; None
            keeps onnxruntime's default (all cores). One stream on a laptop:
            1-2 intra-op threads is usually best.
        spin_us: how long onnxruntime's pool threads busy-wait for the next
            piece of work before sleeping, in µs. 0 (default): never; a live
            stream runs one short step per chunk, and after that idle gap a
            spinning pool measured no faster. Steps run back to back (a file
            as fast as possible) gain from ``BACK_TO_BACK_SPIN_US``: within a
            step every parallel op then finds its helper thread awake.
            None: onnxruntime's default, which spins without a bound and
            burns a core per thread between chunks.
    Raises:
        BundleError: the model file is missing, not loadable, or disagrees
            with config.json.
        EngineUnavailableError: device="cuda" without a CUDA provider.
    """

    concurrent_steps = True  # InferenceSession.run is thread-safe

    def __init__(
        self,
        bundle: Union[Bundle, str],
        *,
        quantized: bool = False,
        device: str = "auto",
        intra_op_threads: Optional[int] = None,
        inter_op_threads: Optional[int] = None,
        spin_us: Optional[int] = 0,
    ) -> None:
        import onnxruntime as ort  # light enough, but keep module import cheap

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
        self.model_path = bundle.model_file("int8" if quantized else "onnx")
        opts = session_options(intra_op_threads, inter_op_threads, spin_us)
        self.providers = _providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.model_path), sess_options=opts, providers=self.providers)
        except Exception as exc:  # onnxruntime raises several types for bad files
            raise BundleError(
                f"{self.model_path} could not be loaded by onnxruntime (corrupted or not an ONNX model?): "
                f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            ) from exc
        # A graph may leave an output's shape undeclared (shape None): only names/dtypes are checked then.
        ins = [IOSpec(i.name, None if i.shape is None else tuple(i.shape), ort_type_to_dtype(i.type)) for i in self.session.get_inputs()]
        outs = [IOSpec(o.name, None if o.shape is None else tuple(o.shape), ort_type_to_dtype(o.type)) for o in self.session.get_outputs()]
        check_graph_io(self.config, ins, outs, self.model_path)
        self._state_in = [s.input_name for s in self.config.states]
        self._out_names = list(self.config.outputs)

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"

    def _run(self, samples: np.ndarray, states: Sequence[np.ndarray]) -> StepResult:
        feed = {"samples": samples}
        for name, st in zip(self._state_in, states):
            feed[name] = st
        outs = dict(zip(self._out_names, self.session.run(self._out_names, feed)))
        return StepResult(
            features=outs["features"],
            logits=outs.get("logits"),
            codes=outs.get("codes"),
            states=[outs[s.output_name] for s in self.config.states],
        )

    def __repr__(self) -> str:
        return f"OrtEngine({self.model_path}, providers={self.session.get_providers()})"
