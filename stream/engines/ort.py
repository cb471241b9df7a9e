"""ONNX Runtime engine (CPU; CUDA when onnxruntime-gpu provides it)."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from ..bundle import Bundle, BundleError, IOSpec, check_graph_io, load_bundle, ort_type_to_dtype
from .base import Engine, EngineUnavailableError, StepResult

__all__ = ["OrtEngine"]


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
        spin: let onnxruntime's pool threads busy-wait between runs. Off by
            default: a live stream runs one short step every chunk, and
            spinning threads burn a core each while they wait for it.
    Raises:
        BundleError: the model file is missing, not loadable, or disagrees
            with config.json.
        EngineUnavailableError: device="cuda" without a CUDA provider.
    """

    def __init__(
        self,
        bundle: Union[Bundle, str],
        *,
        quantized: bool = False,
        device: str = "auto",
        intra_op_threads: Optional[int] = None,
        inter_op_threads: Optional[int] = None,
        spin: bool = False,
    ) -> None:
        import onnxruntime as ort  # light enough, but keep module import cheap

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        super().__init__(bundle)
        self.model_path = bundle.model_file("int8" if quantized else "onnx")
        opts = ort.SessionOptions()
        if intra_op_threads is not None:
            opts.intra_op_num_threads = int(intra_op_threads)
        if inter_op_threads is not None:
            opts.inter_op_num_threads = int(inter_op_threads)
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only; a bundle problem is reported by us
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
