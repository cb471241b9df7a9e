"""One weights file for several ONNX graphs of the same model.

A bundle that serves several latencies holds one step graph per chunk size;
the graphs differ in shapes and masks but not in their weights. Written
inline, each graph would carry a full copy. Here every initializer of at
least ``min_bytes`` moves to ONNX external data in one file, stored once per
distinct content (SHA-256 of its bytes): the second and later graphs point at
the bytes the first one wrote. ONNX Runtime and TensorRT's parser read
external data natively (paths relative to the graph file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence, Union

__all__ = ["share_weights"]

_ALIGN = 64  # offsets aligned for memory mapping


def share_weights(graphs: Sequence[Union[str, Path]], weights_name: str = "weights.bin", min_bytes: int = 1024) -> dict:
    """Rewrite ``graphs`` (same folder) to keep their large initializers in one shared file.

    Returns {"weights_bytes", "tensors", "shared_tensors", "graph_bytes": {name: bytes}}.
    """
    import onnx
    from onnx import numpy_helper

    paths = [Path(g) for g in graphs]
    folder = paths[0].parent
    if any(p.parent != folder for p in paths):
        raise ValueError("graphs sharing one weights file must be in one folder")
    where: dict[str, tuple[int, int]] = {}  # content hash -> (offset, length)
    tensors = shared = 0
    with open(folder / weights_name, "wb") as out:
        for path in paths:
            model = onnx.load(str(path), load_external_data=True)
            for t in model.graph.initializer:
                if not t.HasField("raw_data"):  # typed fields (float_data, ...) -> raw bytes
                    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
                data = t.raw_data
                if len(data) < min_bytes:
                    continue
                tensors += 1
                key = hashlib.sha256(data).hexdigest()
                if key in where:
                    shared += 1
                else:
                    pad = (-out.tell()) % _ALIGN
                    out.write(b"\0" * pad)
                    where[key] = (out.tell(), len(data))
                    out.write(data)
                offset, length = where[key]
                t.ClearField("raw_data")
                t.data_location = onnx.TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", weights_name), ("offset", str(offset)), ("length", str(length))):
                    e = t.external_data.add()
                    e.key, e.value = k, v
            onnx.save_model(model, str(path))
        size = out.tell()
    return {"weights_bytes": size, "tensors": tensors, "shared_tensors": shared,
            "graph_bytes": {p.name: p.stat().st_size for p in paths}}
