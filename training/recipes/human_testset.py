"""The human-speech sanity sets, as folders of 16 kHz WAVs with a .txt
transcript beside each (`wavstream eval` input):

* ``pocketsphinx``: Debian's pocketsphinx-testdata, ten utterances (five
  LibriVox sentences, five card names);
* ``alsa``: the eight channel-name phrases alsa-utils' speaker test plays
  ("front left", ...; one male voice, 48 kHz, resampled to 16 kHz).

    sudo apt-get install pocketsphinx-testdata alsa-utils
    python training/recipes/human_testset.py runs/human
    wavstream eval --model default runs/human/pocketsphinx
    wavstream eval --model default runs/human/alsa

Never train on them: they are the only real human speech here.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
ALSA = Path("/usr/share/sounds/alsa")
SETS = [("cards", "cards.transcription"), ("librivox", "transcription")]
LINE = re.compile(r"<s>\s*(.*?)\s*</s>\s*\((\S+)\)")


def build_pocketsphinx(out: Path, data: Path = POCKETSPHINX) -> int:
    if not data.is_dir():
        raise FileNotFoundError(f"{data} not found: install Debian's pocketsphinx-testdata "
                                "(apt-get install pocketsphinx-testdata)")
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for folder, transcripts in SETS:
        for line in (data / folder / transcripts).read_text().splitlines():
            m = LINE.search(line)
            if not m:
                continue
            text, uid = " ".join(m.group(1).split()), m.group(2)
            n += 1
            name = f"{n:03d}"
            shutil.copyfile(data / folder / f"{uid}.wav", out / f"{name}.wav")
            (out / f"{name}.txt").write_text(text)
    return n


def build_alsa(out: Path, data: Path = ALSA) -> int:
    import soundfile as sf
    import soxr

    # Noise.wav is not speech; every other file is named for what it says
    files = sorted(p for p in data.glob("*.wav") if p.stem != "Noise") if data.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no speech WAVs in {data}: install alsa-utils")
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files, 1):
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        x = soxr.resample(x.mean(axis=1), sr, 16000)
        sf.write(str(out / f"{i:03d}.wav"), x, 16000, subtype="PCM_16")
        (out / f"{i:03d}.txt").write_text(path.stem.replace("_", " ").lower())
    return len(files)


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "runs/human")
    print(f"pocketsphinx: {build_pocketsphinx(out / 'pocketsphinx')} utterances in {out / 'pocketsphinx'}")
    print(f"alsa: {build_alsa(out / 'alsa')} utterances in {out / 'alsa'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
