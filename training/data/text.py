"""Sentence sources and text normalisation for the synthetic corpus.

Sentences come from Debian packages that install offline and reproducibly:

* ``fortunes`` and ``fortunes-min``: ``/usr/share/games/fortunes/*`` (fortune
  cookies, ``%``-separated). Attribution lines (``-- Mark Twain``) are cut off
  before the text is split into sentences.
* ``wordnet-base``: the quoted usage examples in the glosses of
  ``/usr/share/wordnet/data.{noun,verb,adj,adv}`` and the verb frames of
  ``sents.vrb`` filled in with each verb listed for them in ``sentidx.vrb``.

Every sentence is normalised to the character vocabulary of the models
(lower-case a-z, apostrophe, single spaces): numbers are spelled out, a few
symbols become words, other punctuation is removed. A sentence is kept only if
it has 3..20 words and every word is in the ``wamerican`` word list
(``/usr/share/dict/american-english``), which throws away names, code, ASCII
art and typos.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
WORDLIST_CANDIDATES = (Path("/usr/share/dict/american-english"), Path("/usr/share/dict/words"))

VOCAB = "abcdefghijklmnopqrstuvwxyz' "
MIN_WORDS = 3
MAX_WORDS = 20

# --------------------------------------------------------------------------
# numbers -> words

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORD_IRREG = {"one": "first", "two": "second", "three": "third", "five": "fifth",
              "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def _below_1000(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_to_words(n: int) -> str:
    """Cardinal number in words: ``1234 -> 'one thousand two hundred thirty four'``."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 1000:
        return " ".join(_below_1000(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += _below_1000(n // value) if n // value < 1000 else number_to_words(n // value).split()
            words.append(name)
            n %= value
    if n:
        words += _below_1000(n)
    return " ".join(words)


def year_to_words(n: int) -> str:
    """``1984 -> 'nineteen eighty four'``, ``1905 -> 'nineteen oh five'``."""
    hi, lo = divmod(n, 100)
    if lo == 0:
        return number_to_words(hi) + " hundred"
    if lo < 10:
        return number_to_words(hi) + " oh " + _ONES[lo]
    return number_to_words(hi) + " " + number_to_words(lo)


def ordinal_to_words(n: int) -> str:
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORD_IRREG:
        words[-1] = _ORD_IRREG[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(s: str) -> str:
    return " ".join("oh" if c == "0" else _ONES[int(c)] for c in s)


def _spell_number(match: re.Match) -> str:
    whole = match.group("int").replace(",", "")
    frac = match.group("frac")
    ordsuf = match.group("ord")
    n = int(whole)
    if ordsuf:
        return " " + ordinal_to_words(n) + " "
    if frac:
        return f" {number_to_words(n)} point {_digits(frac)} "
    if len(whole) > 1 and whole.startswith("0"):
        return " " + _digits(whole) + " "  # 007, zip codes, ...
    if len(match.group("int")) == 4 and (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return " " + year_to_words(n) + " "
    if len(whole) > 15:
        return " " + _digits(whole) + " "
    return " " + number_to_words(n) + " "


_NUM_RE = re.compile(r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?(?P<ord>st|nd|rd|th)?\b",
                     re.IGNORECASE)
_MONEY_RE = re.compile(r"\$\s?(\d[\d,]*(?:\.\d+)?)")
_PERCENT_RE = re.compile(r"(\d)\s?%")
_SYMBOLS = {"&": " and ", "+": " plus ", "=": " equals ", "@": " at "}
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201b": "'", "`": "'", "\u00b4": "'",
           "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}


def normalize(text: str) -> str:
    """Normalise text to the model vocabulary (see module docstring).

    >>> normalize("It's 5:30, Dr. Smith -- 2nd time; $3 & 50%!")
    "it's five thirty dr smith second time three dollars and fifty percent"
    """
    for a, b in _QUOTES.items():
        text = text.replace(a, b)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _MONEY_RE.sub(lambda m: f" {m.group(1)} dollars ", text)
    text = _PERCENT_RE.sub(r"\1 percent", text)
    text = re.sub(r"(\d):(\d\d)\b", r"\1 \2", text)  # times: 5:30 -> five thirty
    for a, b in _SYMBOLS.items():
        text = text.replace(a, b)
    text = _NUM_RE.sub(_spell_number, text)
    text = text.lower()
    # apostrophes: keep those inside words (don't, dog's), drop quote marks
    text = re.sub(r"[^a-z']+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------
# word list and filter


def load_wordlist(path: str | os.PathLike | None = None) -> frozenset[str]:
    """Lower-cased words of the wamerican list (empty set if not installed)."""
    candidates = [Path(path)] if path else list(WORDLIST_CANDIDATES)
    for p in candidates:
        if p.exists():
            with open(p, encoding="utf-8", errors="ignore") as f:
                return frozenset(w.strip().lower() for w in f if w.strip())
    return frozenset()


def is_clean(sentence: str, words: frozenset[str], min_words: int = MIN_WORDS,
             max_words: int = MAX_WORDS) -> bool:
    toks = sentence.split()
    if not (min_words <= len(toks) <= max_words):
        return False
    if any(c not in VOCAB for c in sentence):
        return False
    return all(t in words for t in toks)


# --------------------------------------------------------------------------
# sources

_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_ATTRIB = re.compile(r"(?:^|\s)(?:--|\u2014)\s*[A-Z\"'].*$", re.S)


def _fortune_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_file() and p.suffix not in (".dat", ".u8") and not p.name.startswith("."))


def fortune_sentences(root: Path = FORTUNE_DIR) -> Iterator[str]:
    """Raw sentences of the fortune files (attributions cut off)."""
    for path in _fortune_files(root):
        try:
            content = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        for fortune in re.split(r"^%\s*$", content, flags=re.M):
            # cut an attribution ("-- Author, Book") at the end of the fortune
            lines = fortune.strip().splitlines()
            while lines and re.match(r"^\s*(--|\u2014|~)", lines[-1]):
                lines.pop()
            body = " ".join(l.strip() for l in lines)
            body = _ATTRIB.sub("", body)
            for s in _SENT_SPLIT.split(body):
                s = s.strip()
                if s:
                    yield s


def wordnet_sentences(root: Path = WORDNET_DIR) -> Iterator[str]:
    """Usage examples from the glosses and filled-in verb frames."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{pos}"
        if not path.exists():
            continue
        with open(path, encoding="utf-8", errors="ignore") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue
                gloss = line.split("|", 1)[1]
                for ex in re.findall(r'"([^"]+)"', gloss):
                    yield ex
    sents_path, idx_path = root / "sents.vrb", root / "sentidx.vrb"
    if sents_path.exists() and idx_path.exists():
        frames: dict[str, str] = {}
        for line in sents_path.read_text(encoding="utf-8", errors="ignore").splitlines():
            num, _, text = line.partition(" ")
            if text:
                frames[num] = text.strip()
        seen: set[tuple[str, str]] = set()
        for line in idx_path.read_text(encoding="utf-8", errors="ignore").splitlines():
            key, _, nums = line.partition(" ")
            lemma = key.split("%", 1)[0].replace("_", " ")
            for num in nums.split(","):
                num = num.strip()
                if num in frames and (lemma, num) not in seen:
                    seen.add((lemma, num))
                    # "%ss" (third person) yields e.g. "carrys", which the
                    # word-list filter then drops.
                    yield frames[num].replace("%s", lemma)


def _source_iter(name: str) -> Iterable[str]:
    if name == "fortunes":
        return fortune_sentences()
    if name == "wordnet":
        return wordnet_sentences()
    raise ValueError(f"unknown sentence source {name!r}")


def load_sentences(sources: Iterable[str] = ("fortunes", "wordnet"),
                   wordlist: frozenset[str] | None = None,
                   min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[str]:
    """Distinct normalised clean sentences, in a stable (sorted) order.

    Raises RuntimeError naming the Debian packages when nothing is found.
    """
    words = load_wordlist() if wordlist is None else wordlist
    if not words:
        raise RuntimeError("word list not found: install the Debian package 'wamerican' "
                           "(training/data/install_engines.sh)")
    out: set[str] = set()
    for src in sources:
        for raw in _source_iter(src):
            s = normalize(raw)
            if is_clean(s, words, min_words, max_words):
                out.add(s)
    if not out:
        raise RuntimeError("no sentences found: install the Debian packages 'fortunes', "
                           "'fortunes-min' and 'wordnet-base' (training/data/install_engines.sh)")
    return sorted(out)


def sentences_digest(sentences: list[str]) -> str:
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
