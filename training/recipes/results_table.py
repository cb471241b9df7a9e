"""Markdown tables from the JSON lines that compare_pretraining.sh appends.

    python training/recipes/results_table.py runs/compare.jsonl [--curves docs/pretraining_ctc_curves.png]

One row per family and arm (each pretrained variant, e.g. pretrained_frozen
for the published fine-tuning treatment, then scratch): dev CER and WER at
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
        # pretrained arms (variants carry a tag, e.g. pretrained_fp10), then the scratch control
        arms = sorted({k[1] for k in rows if k[0] == fam and k[1].startswith("pretrained")}) + ["scratch"]
        for arm in arms:
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


PT_RUNS = {"wav2vec": "pt_wav2vec", "vq_wav2vec": "pt_vq_wav2vec", "wav2vec2": "pt_wav2vec2",
           "hubert": "pt_hubert_it1", "wavlm": "pt_wavlm"}  # + a variant's tag


def runs_of(runs: Path, stem: str) -> list[Path]:
    """stem itself and its tagged variants (stem_fp10, ...), not another family's runs."""
    return sorted(p for p in runs.glob(stem + "*") if p.name == stem or p.name.startswith(stem + "_"))
# the metric each objective is judged by, and its chance level where one exists
PT_METRIC = {"wav2vec": ("acc", "1/11 = 0.091"), "vq_wav2vec": ("acc", "1/11 = 0.091"),
             "wav2vec2": ("acc", "1/51 = 0.020"), "hubert": ("acc_m", "1/100 uniform"), "wavlm": ("acc_m", "1/100 uniform")}


def pretraining_table(runs: Path, n: int = 3) -> str:
    """Loss and accuracy at the start and end of each pretraining run (mean of the first/last n log lines)."""
    out = ["| run | updates | wall time | loss start → end | accuracy start → end (chance) | other |",
           "|---|---|---|---|---|---|"]
    for fam, run in ((f, r) for f in FAMILIES for r in runs_of(runs, PT_RUNS[f])):
        log = run / "log.jsonl"
        if not log.exists():
            continue
        rows = [r for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip()) if "loss" in r]
        if not rows:
            continue
        head, tail = rows[:n], rows[-n:]

        def mean(rs: list[dict], key: str) -> float:
            vals = [r[key] for r in rs if key in r]
            return sum(vals) / max(len(vals), 1)

        key, chance = PT_METRIC[fam]
        other = ""
        if "code_perplexity" in rows[-1]:
            other = f"code perplexity {mean(head, 'code_perplexity'):.0f} → {mean(tail, 'code_perplexity'):.0f}"
        out.append(f"| {run.name} | {rows[-1]['step']} | {rows[-1]['elapsed_s'] / 60:.1f} min | "
                   f"{mean(head, 'loss'):.2f} → {mean(tail, 'loss'):.2f} | "
                   f"{mean(head, key):.3f} → {mean(tail, key):.3f} ({chance}) | {other} |")
    return "\n".join(out)


def plot_curves(runs: Path, png: Path, window: int = 10) -> None:
    """CTC loss per update (moving mean) of each family's pretrained and scratch runs, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fams = [f for f in FAMILIES if any((r / "log.jsonl").exists() for r in runs_of(runs, f"ft1h_{f}"))]
    if not fams:
        raise SystemExit(f"no ft1h_* runs in {runs}")
    fig, axes = plt.subplots(1, len(fams), figsize=(3.2 * len(fams), 3), sharey=True, squeeze=False)
    for ax, fam in zip(axes[0], fams):
        curves = [(r, "pretrained" + r.name[len(f"ft1h_{fam}"):]) for r in runs_of(runs, f"ft1h_{fam}")]
        for run, label in curves + [(runs / f"scratch1h_{SCRATCH_OF.get(fam, fam)}", "scratch")]:
            log = run / "log.jsonl"
            if not log.exists():
                continue
            rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            pts = sorted((r["step"], r["loss"]) for r in rows if "loss" in r)
            steps, loss = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
            if len(loss) >= window:
                loss = np.convolve(loss, np.ones(window) / window, mode="valid")
                steps = steps[window - 1:]
            ax.plot(steps, loss, label=label)
        ax.set_title(fam)
        ax.set_xlabel("CTC update")
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("CTC loss per utterance")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", nargs="?", default="runs/compare.jsonl", help="JSON lines from compare_pretraining.sh")
    ap.add_argument("--curves", help="also plot the CTC loss curves of the runs beside it into this PNG")
    args = ap.parse_args(argv[1:])
    path = Path(args.table)
    print("dev CER / WER (greedy CTC, streaming unless full context)\n")
    print(table(load(path)))
    print("\npretraining runs\n")
    print(pretraining_table(path.parent))
    if args.curves:
        plot_curves(path.parent, Path(args.curves))
        print(f"\ncurves: {args.curves}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
