"""Markdown tables from the JSON lines that compare_pretraining.sh appends.

    python training/recipes/results_table.py runs/compare.jsonl

One row per family and arm (pretrained; pretrained_frozen, the published
fine-tuning treatment, where it was run; scratch): dev CER and WER at
160/320/640 ms chunks and full context, CER on human speech, and the relative
gap of 320 ms streaming to full context.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FAMILIES = ["wav2vec", "vq_wav2vec", "wav2vec2", "hubert", "wavlm"]
SETTINGS = ["160", "320", "640", "full"]
# wav2vec2 and HuBERT share one scratch control (the same network once the pretraining modules are dropped)
SCRATCH_OF = {"hubert": "wav2vec2"}


def load(path: Path) -> dict[tuple[str, str, str, str], dict]:
    rows: dict[tuple[str, str, str, str], dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["family"], r["arm"], r["split"], r["setting"])] = r  # a re-run replaces the older line
    return rows


def table(rows: dict) -> str:
    head = ("| family | init | " + " | ".join(f"{s} ms" if s != "full" else "full context" for s in SETTINGS)
            + " | 320 ms vs full | human (320 ms) |")
    out = [head, "|" + "---|" * (len(SETTINGS) + 4)]
    for fam in FAMILIES:
        for arm in ("pretrained", "pretrained_frozen", "scratch"):
            src = SCRATCH_OF.get(fam, fam) if arm == "scratch" else fam
            cells = []
            for s in SETTINGS:
                r = rows.get((src, arm, "dev", s))
                cells.append(f"{r['cer']:.3f} / {r['wer']:.3f}" if r else "–")
            a, b = rows.get((src, arm, "dev", "320")), rows.get((src, arm, "dev", "full"))
            gap = f"{100 * (a['cer'] - b['cer']) / b['cer']:+.1f} %" if a and b and b["cer"] else "–"
            h = rows.get((src, arm, "human", "320"))
            if not any(c != "–" for c in cells) and not h:
                continue
            human = f"{h['cer']:.3f}" if h else "–"
            out.append(f"| {fam} | {arm} | " + " | ".join(cells) + f" | {gap} | {human} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "runs/compare.jsonl")
    print("dev CER / WER (greedy CTC, streaming unless full context)\n")
    print(table(load(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
