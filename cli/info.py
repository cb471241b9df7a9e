"""`wavstream info`: parameter counts and configs of the five families; `--model BUNDLE`: what a bundle serves."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="only this family")
    p.add_argument("--size", help="only this size (tiny, base, large)")
    p.add_argument("--config", action="store_true", help="print the full config JSON of each model")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.add_argument("--model", default=None,
                   help="describe a bundle instead (folder, or 'default'): family, latencies served, files")


def _bundle_info(model: str, as_json: bool) -> int:
    import sys

    from wavstream.stream.bundle import BundleError, load_bundle
    from wavstream.stream.recognizer import resolve_model

    try:
        b = load_bundle(resolve_model(model))
    except BundleError as exc:
        print(f"wavstream info: {exc}", file=sys.stderr)
        return 2
    c = b.config
    row = {"bundle": str(b.path), "format_version": c.format_version, "family": c.family,
           "default_latency_ms": c.chunk_ms, "latencies_ms": list(c.latencies_ms), "feature_dim": c.feature_dim,
           "vocab_size": len(c.vocab), "files": sorted(p.name for p in b.path.iterdir() if p.is_file())}
    if as_json:
        print(json.dumps(row))
    else:
        for k, v in row.items():
            print(f"{k:<19} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model is not None:
        return _bundle_info(args.model, args.json)
    import torch

    from wavstream.training.models import FAMILIES, SIZES, build_model
    from wavstream.training.objectives.heads import build_heads

    fams = [args.family] if args.family else list(FAMILIES)
    sizes = [args.size] if args.size else list(SIZES)
    if not args.json:
        print(f"{'family':<11} {'size':<6} {'params':>13} {'backbone':>13} {'stride':>6} {'form':<10}")
    for fam in fams:
        for size in sizes:
            with torch.device("meta"):  # counts without allocating 300M parameters
                m = build_model(fam, size)
                heads = build_heads(m.config)  # the pretraining objective's
            head_params = sum(p.numel() for p in heads.parameters()) if heads is not None else 0
            row = {"family": fam, "size": size, "params": m.num_parameters() + head_params,
                   "backbone": m.num_parameters(backbone_only=True), "stride": m.stride,
                   "form": "streaming" if m.config.streamable else "published"}
            if args.json:
                if args.config:
                    row["config"] = m.config.to_dict()
                print(json.dumps(row))
            else:
                print(f"{fam:<11} {size:<6} {row['params']:>13,} {row['backbone']:>13,} {m.stride:>6} {row['form']:<10}")
                if args.config:
                    print(m.config.to_json(indent=1))
    return 0
