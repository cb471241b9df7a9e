"""The human-speech sanity set: Debian's pocketsphinx-testdata utterances as a
folder of 16 kHz WAVs with a .txt transcript beside each (`wavstream eval` input).

    sudo apt-get install pocketsphinx-testdata
    python training/recipes/human_testset.py runs/human

Ten utterances with transcripts (five LibriVox sentences, five card names).
Never train on them: they are the only real human speech here.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

DATA = Path("/usr/share/pocketsphinx/test/data")
SETS = [("cards", "cards.transcription"), ("librivox", "transcription")]
LINE = re.compile(r"<s>\s*(.*?)\s*</s>\s*\((\S+)\)")


def build(out: Path, data: Path = DATA) -> int:
    if not data.is_dir():
        raise SystemExit(f"{data} not found: install Debian's pocketsphinx-testdata "
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


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/human")
    print(f"{build(out)} utterances in {out}")
