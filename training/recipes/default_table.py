"""The README's table for the default model, from eval_v2.sh's JSON lines.

    python training/recipes/default_table.py runs/ctc_v2/eval/eval.jsonl stream/default_model/eval/eval.jsonl

The first file holds the torch checkpoint's lines (160/320/640 ms and full
context per engine, telephone, human speech), the second the exported
bundle's (ONNX Runtime fp32 and int8). Prints Markdown: one table of dev CER /
WER by setting and engine, then the channel and human-speech rows, then the
bundle-vs-checkpoint and int8-vs-fp32 checks, each with the command behind it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETTINGS = ["160", "320", "640", "full"]


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _setting(r: dict) -> str:
    return "full" if r.get("full_context") else str(r.get("chunk_ms"))


def _data(r: dict) -> str:
    return Path(r.get("data", "?")).name.removesuffix(".tsv")


def _pick(rows: list[dict], data: str, setting: str = "320", channel: str = "clean",
          engine: str | None = None) -> dict | None:
    for r in rows:
        if (_data(r) == data and _setting(r) == setting and r.get("channel", "clean") == channel
                and (engine is None or r.get("engine") == engine)):
            return r
    return None


def _cw(r: dict | None) -> str:
    return "—" if r is None else f"{r['cer']:.3f} / {r['wer']:.3f}"


def dev_table(rows: list[dict]) -> str:
    """Dev CER / WER at each chunk size and full context, overall and per TTS engine."""
    engines = sorted({e for r in rows if _data(r) == "dev" for e in r.get("by_engine", {})})
    head = "| dev (unseen voices), greedy | " + " | ".join(
        "full context" if s == "full" else f"{s} ms" for s in SETTINGS) + " |"
    out = [head, "|" + "---|" * (len(SETTINGS) + 1)]
    picks = {s: _pick(rows, "dev", s) for s in SETTINGS}
    out.append("| **all engines** (CER / WER) | " + " | ".join(_cw(picks[s]) for s in SETTINGS) + " |")
    for e in engines:
        cells = []
        for s in SETTINGS:
            r = picks[s]
            cells.append("—" if r is None or e not in r.get("by_engine", {}) else f"{r['by_engine'][e]['cer']:.3f}")
        out.append(f"| {e} (CER) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def other_rows(ckpt: list[dict], bundle: list[dict]) -> str:
    """Telephone channel, human speech, and the exported bundle's own figures."""
    lines = ["| measurement (320 ms, greedy) | CER / WER |", "|---|---|"]
    named = [
        ("dev through a telephone line (band-pass + GSM)", _pick(ckpt, "dev", channel="telephone")),
        ("human speech: pocketsphinx test data", _pick(ckpt, "pocketsphinx")),
        ("human speech: ALSA test phrases", _pick(ckpt, "alsa")),
        ("dev, exported bundle, ONNX Runtime fp32", _pick(bundle, "dev", engine="onnxruntime")),
        ("dev, exported bundle, ONNX Runtime int8", _pick(bundle, "dev", engine="onnxruntime int8")),
    ]
    lines += [f"| {name} | {_cw(r)} |" for name, r in named]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ckpt, bundle = load(Path(argv[0])), load(Path(argv[1]))
    print(dev_table(ckpt))
    print()
    print(other_rows(ckpt, bundle))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
