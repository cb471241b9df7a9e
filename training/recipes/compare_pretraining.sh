#!/usr/bin/env bash
# Does pretraining pay off? For each family: tiny self-supervised pretraining on
# the 4.9 h train split (unlabelled), CTC fine-tuning on the 1-hour labelled
# subset (train_1h.tsv), and the same architecture trained from scratch on the
# same labels for the same number of updates; then dev CER/WER at 160/320/640 ms
# and full context, and CER on human speech (pocketsphinx-testdata).
#
# Sized for one 3-hour session on 2 CPU cores (about 2 h in all; run nothing else).
# Every run resumes from its last checkpoint, so an interrupted script can be
# re-run. wav2vec2 and HuBERT share one scratch control: without their
# pretraining modules the two tiny models are the same network (same config,
# same 3,534,781 parameters).
#
# Usage: bash training/recipes/compare_pretraining.sh [family ...]
#   families: hubert wav2vec2 wavlm wav2vec vq_wav2vec (default: all, this order)
#
# The runs behind README's table (docs/pretraining.md), with RUNS=runs:
#   TAG=_fp10 FROZEN_ARM=1 bash training/recipes/compare_pretraining.sh hubert wav2vec2  # published objectives
#   TAG=_u1 UNMASKED_WEIGHT=1 bash training/recipes/compare_pretraining.sh hubert wavlm  # + unmasked-frame loss
#   PT_STEPS=300 PT_MINUTES=7 FT_STEPS=400 bash training/recipes/compare_pretraining.sh wav2vec vq_wav2vec
#   python training/recipes/results_table.py runs/compare.jsonl --curves docs/pretraining_ctc_curves.png
set -uo pipefail
C=${CORPUS:-data/corpus}; R=${RUNS:-runs}; HUMAN=${HUMAN:-runs/human}
PT_STEPS=${PT_STEPS:-500}   # pretraining updates of 60 s of audio (~13 min each)
FT_STEPS=${FT_STEPS:-600}   # CTC updates of 40 s of audio, pretrained and scratch alike
TABLE=${TABLE:-$R/compare.jsonl}
# Objective knobs for variants (the defaults are the published values):
# FEATURE_PENALTY, the conv-feature L2 weight (wav2vec2/HuBERT/WavLM; 10), and
# UNMASKED_WEIGHT, the HuBERT/WavLM loss weight of unmasked frames (0). TAG
# names a variant's pretrained runs: pt_${fam}${TAG}, ft1h_${fam}${TAG}, and
# the arm pretrained${TAG} in the table.
FEATURE_PENALTY=${FEATURE_PENALTY:-10}
UNMASKED_WEIGHT=${UNMASKED_WEIGHT:-0}
TAG=${TAG:-}
PT=(--train "$C/train.tsv" --steps "$PT_STEPS" --batch-seconds 60 --threads 2 --ckpt-every 100 --max-minutes "${PT_MINUTES:-16}")
# Identical CTC settings for both arms, so that only the initial weights differ:
# everything trains from the first update, one linear schedule. The published
# fine-tuning treatment (conv encoder frozen, CTC head alone for the first 10%
# of updates, tri-stage schedule) is the extra arm FROZEN_ARM=1; with 600
# updates of pretraining behind it, it left HuBERT tiny all-blank (README).
FT=(--train "$C/train_1h.tsv" --steps "$FT_STEPS" --lr 1.5e-3 --batch-seconds 40 --threads 2
    --mask-prob 0.2 --ckpt-every 100 --max-minutes 20)
SAME_AS_SCRATCH=(--train-conv --freeze-transformer-steps 0 --schedule linear)
FROZEN_ARM=${FROZEN_ARM:-0}

pretrain() {  # family run-folder extra-args...
  local fam=$1 out=$2; shift 2
  [ -f "$out/final/config.json" ] || wavstream train pretrain --family "$fam" --out "$out" "${PT[@]}" "$@"
}
finetune() {  # init run-folder family [extra args]
  local init=$1 out=$2 fam=$3; shift 3
  [ -f "$out/final/config.json" ] || wavstream train ctc --init "$init" --family "$fam" --out "$out" "${FT[@]}" "$@"
}
record() {  # family arm split setting: tag one `wavstream eval` JSON result and append it to the table
  python3 -c "import json,sys; r=json.load(sys.stdin); r.update(family='$1', arm='$2', split='$3', setting='$4'); print(json.dumps(r))" >> "$TABLE"
}
evaluate() {  # run-folder family arm
  for ms in 160 320 640 full; do
    if [ $ms = full ]; then opt=(--full-context); else opt=(--chunk-ms $ms); fi
    wavstream eval --model "$1" "$C/dev.tsv" "${opt[@]}" --threads 2 | record "$2" "$3" dev $ms
  done
  if [ -d "$HUMAN" ]; then
    wavstream eval --model "$1" "$HUMAN" --chunk-ms 320 --threads 2 | record "$2" "$3" human 320
  fi
}

run() {
  local fam=$1
  case "$fam" in
    hubert)  # iteration 1 only (MFCC k-means, K=100): iteration 2 does not fit the session
      pretrain hubert "$R/pt_hubert_it1$TAG" --labels "$R/labels_mfcc_k100" --num-clusters 100 \
        --feature-penalty "$FEATURE_PENALTY" --unmasked-weight "$UNMASKED_WEIGHT" ;;
    wav2vec2)  # diversity 0.5 and 50 distractors: see pretrain_tiny.sh
      pretrain wav2vec2 "$R/pt_wav2vec2$TAG" --num-negatives 50 --diversity-weight 0.5 \
        --feature-penalty "$FEATURE_PENALTY" ;;
    wavlm)  # targets: the iteration-1 MFCC labels of the clean audio (published: HuBERT it-2 labels)
      pretrain wavlm "$R/pt_wavlm$TAG" --labels "$R/labels_mfcc_k100" --feature-penalty "$FEATURE_PENALTY" \
        --unmasked-weight "$UNMASKED_WEIGHT" ;;
    wav2vec|vq_wav2vec)  # no feature penalty in these objectives
      pretrain "$fam" "$R/pt_$fam$TAG" ;;
    *) echo "unknown family $fam" >&2; return 2 ;;
  esac || return 1
  local pt="$R/pt_$fam$TAG"; [ "$fam" = hubert ] && pt="$R/pt_hubert_it1$TAG"
  finetune "$pt" "$R/ft1h_$fam$TAG" "$fam" "${SAME_AS_SCRATCH[@]}" &&
    evaluate "$R/ft1h_$fam$TAG" "$fam" "pretrained$TAG" || return 1
  if [ "$FROZEN_ARM" = 1 ]; then
    finetune "$pt" "$R/ft1h_${fam}${TAG}_frozen" "$fam" &&
      evaluate "$R/ft1h_${fam}${TAG}_frozen" "$fam" "pretrained${TAG}_frozen" || return 1
  fi
  local arch=$fam; [ "$fam" = hubert ] && arch=wav2vec2   # the shared transformer control
  if [ ! -f "$R/scratch1h_$arch/final/config.json" ]; then
    finetune none "$R/scratch1h_$arch" "$arch" && evaluate "$R/scratch1h_$arch" "$arch" scratch || return 1
  fi
}

[ $# -eq 0 ] && set -- hubert wav2vec2 wavlm wav2vec vq_wav2vec
for fam in "$@"; do
  echo "=== $fam $(date +%T) ==="
  run "$fam" || echo "!!! $fam failed" >&2
done
echo "=== done $(date +%T) ==="
