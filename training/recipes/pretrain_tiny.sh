#!/usr/bin/env bash
# Tiny self-supervised pretraining recipes, one per family, on the synthetic
# corpus (training/recipes/ctc_default.sh step 1 builds it). Each training
# command is sized for about 30 minutes on 2 CPU cores (800 updates of ~60 s of
# padded audio; --max-minutes stops it with a checkpoint if the machine is
# slower). Run them one at a time: each uses both cores (--threads 2).
#
# Departures from the published recipes are explained in
# training/objectives/*.py and training/pretrain.py (RECIPE): streaming model
# form, tiny sizes, learning rates, the Gumbel temperature annealed over 70%
# of this run instead of ~277k updates, 50 wav2vec 2.0 distractors instead of
# 100 and diversity weight 0.5 instead of 0.1, K=100 clusters for both HuBERT
# iterations (layer 3 of the 4-layer tiny model for iteration 2), and for
# HuBERT/WavLM a loss on unmasked frames too (--unmasked-weight 1; published
# 0): without it the tiny encoders collapsed to 1-3 dimensions and fine-tuned
# worse than a random start (docs/pretraining.md).
#
# Usage: bash training/recipes/pretrain_tiny.sh [family ...]
#   families: wav2vec vq_wav2vec vq_wav2vec_kmeans wav2vec2 hubert hubert_it2 wavlm
#   (default: all, in this order; hubert_it2 and wavlm need hubert first)
set -euo pipefail
CORPUS=${CORPUS:-data/corpus}
RUNS=${RUNS:-runs}
STEPS=${STEPS:-800}
COMMON=(--train "$CORPUS/train.tsv" --steps "$STEPS" --batch-seconds 60 --threads 2
        --ckpt-every 100 --max-minutes 38)

run() {
  case "$1" in
    wav2vec)
      wavstream train pretrain --family wav2vec --out "$RUNS/pt_wav2vec" "${COMMON[@]}" ;;
    vq_wav2vec)  # Gumbel quantiser, no diversity penalty (README recipe)
      wavstream train pretrain --family vq_wav2vec --out "$RUNS/pt_vq_wav2vec" "${COMMON[@]}" ;;
    vq_wav2vec_kmeans)  # k-means quantiser with codebook + commitment loss
      wavstream train pretrain --family vq_wav2vec --vq-type kmeans --out "$RUNS/pt_vq_wav2vec_kmeans" "${COMMON[@]}" ;;
    wav2vec2)
      # diversity 0.5 (published 0.1): at tiny scale 0.1 let the 2x64 codebook collapse in tests
      # (watch distinct_negatives and code_perplexity in log.jsonl)
      wavstream train pretrain --family wav2vec2 --num-negatives 50 --diversity-weight 0.5 \
        --out "$RUNS/pt_wav2vec2" "${COMMON[@]}" ;;
    hubert)  # iteration 1: MFCC(39) k-means, K=100, 100 Hz labels (built once, ~2 min)
      wavstream train pretrain --family hubert --labels "$RUNS/labels_mfcc_k100" --num-clusters 100 \
        --unmasked-weight 1 --out "$RUNS/pt_hubert_it1" "${COMMON[@]}" ;;
    hubert_it2)  # iteration 2: k-means of layer 3 (of 4) of the iteration-1 model, 50 Hz labels
      wavstream train pretrain --family hubert --labels "$RUNS/labels_it2_k100" --kmeans-iter 2 \
        --teacher "$RUNS/pt_hubert_it1" --layer 3 --num-clusters 100 --unmasked-weight 1 \
        --out "$RUNS/pt_hubert_it2" "${COMMON[@]}" ;;
    wavlm)  # HuBERT-style labels of the clean audio (iteration-2 labels), noisy/mixed input
      if [ ! -f "$RUNS/labels_it2_k100/meta.json" ]; then
        wavstream train pretrain --family hubert --labels "$RUNS/labels_it2_k100" --kmeans-iter 2 \
          --teacher "$RUNS/pt_hubert_it1" --layer 3 --num-clusters 100 --out "$RUNS/pt_hubert_it2" \
          "${COMMON[@]}" --steps 0
      fi
      wavstream train pretrain --family wavlm --labels "$RUNS/labels_it2_k100" \
        --mix-prob 0.2 --noise-prob 0.25 --reverb-prob 0.15 --unmasked-weight 1 \
        --out "$RUNS/pt_wavlm" "${COMMON[@]}" ;;
    *) echo "unknown recipe $1" >&2; exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- wav2vec vq_wav2vec vq_wav2vec_kmeans wav2vec2 hubert hubert_it2 wavlm
fi
for r in "$@"; do
  echo "=== $r ==="
  run "$r"
done
