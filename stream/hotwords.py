"""Hotwords (contextual biasing): a token-level Aho-Corasick automaton whose
states carry a bonus that the CTC beam adds to a hypothesis while it spells a
listed phrase (the context graph of WeNet and sherpa-onnx).

Each token of a phrase matched so far earns the phrase's per-token score. A
hypothesis that leaves a phrase before its end falls back along the failure
link to the longest suffix that still starts some phrase, and its bonus drops
to that state's: the score of the failed partial match is given back. A
completed phrase keeps its bonus. A phrase that is the start of a longer one
("new" of "new york") does not end the match: the hypothesis stays in the
longer phrase's path, and keeps the shorter phrase's bonus if it leaves it
("new car"). So biasing can pull a rare word into the
beam but cannot change the ranking of hypotheses that spell no listed phrase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from .errors import WavstreamError

__all__ = ["Hotword", "HotwordError", "ContextGraph", "parse_hotwords", "merge_hotwords", "read_hotwords_file", "spellable",
           "DEFAULT_HOTWORD_SCORE", "MAX_HOTWORDS", "MAX_HOTWORD_CHARS"]

DEFAULT_HOTWORD_SCORE = 2.0  # natural-log bonus per matched token
MAX_HOTWORDS = 1000
MAX_HOTWORD_CHARS = 100
MAX_HOTWORD_SCORE = 20.0


class HotwordError(WavstreamError, ValueError):
    """A hotword list that cannot be used (empty phrase, too long, bad score, letters the model lacks)."""


@dataclass(frozen=True)
class Hotword:
    phrase: str
    score: float = DEFAULT_HOTWORD_SCORE  # per token

    def __post_init__(self) -> None:
        words = self.phrase.split()
        if not words:
            raise HotwordError("a hotword must not be empty")
        if len(self.phrase) > MAX_HOTWORD_CHARS:
            raise HotwordError(f"hotword {self.phrase[:20]!r}... is longer than {MAX_HOTWORD_CHARS} characters")
        if not (0.0 < float(self.score) <= MAX_HOTWORD_SCORE):
            raise HotwordError(f"hotword {self.phrase!r}: score must be in (0, {MAX_HOTWORD_SCORE}], got {self.score!r}")


def parse_hotwords(items: Iterable[Union[str, Hotword]], default_score: float = DEFAULT_HOTWORD_SCORE) -> list[Hotword]:
    """Strings ('phrase' or 'phrase:score') or Hotwords -> Hotwords, lower-cased and space-normalised."""
    out: list[Hotword] = []
    for item in items:
        if isinstance(item, Hotword):
            out.append(Hotword(" ".join(item.phrase.lower().split()), item.score))
            continue
        if not isinstance(item, str):
            raise HotwordError(f"a hotword must be a string, got {type(item).__name__}")
        text, score = item, default_score
        head, sep, tail = item.rpartition(":")
        if sep:
            try:
                score = float(tail)
                text = head
            except ValueError:
                pass  # a colon inside the phrase, no score
        out.append(Hotword(" ".join(text.lower().split()), score))
    if len(out) > MAX_HOTWORDS:
        raise HotwordError(f"at most {MAX_HOTWORDS} hotwords, got {len(out)}")
    return out


def merge_hotwords(base: Iterable[Union[str, Hotword]], extra: Iterable[Union[str, Hotword]]) -> list[Hotword]:
    """``base`` (e.g. a server's list) with ``extra`` (e.g. a session's) added; a phrase in both takes
    ``extra``'s score. Raises HotwordError for a bad phrase or more than MAX_HOTWORDS in all."""
    merged = {h.phrase: h for h in parse_hotwords(base)}
    for h in parse_hotwords(extra):
        merged[h.phrase] = h
    if len(merged) > MAX_HOTWORDS:
        raise HotwordError(f"at most {MAX_HOTWORDS} hotwords, got {len(merged)} with the server's")
    return list(merged.values())


def spellable(phrases: Iterable[str], tokens: Sequence[str], limit: int = MAX_HOTWORDS) -> tuple[str, ...]:
    """The phrases a character vocabulary can spell, lower-cased, at most ``limit`` of them.

    For lists made for other purposes (Home Assistant's entity names, Vosk's phrase_list), where a
    name with a digit or an accent must not refuse the whole request: it is left out instead.
    """
    letters = {t for t in tokens if len(t) == 1}
    out: list[str] = []
    for p in phrases:
        text = " ".join(str(p).lower().split())
        if text and len(text) <= MAX_HOTWORD_CHARS and all(ch in letters for ch in text.replace(" ", "")):
            if text not in out:
                out.append(text)
        if len(out) >= limit:
            break
    return tuple(out)


def read_hotwords_file(path: Union[str, Path], default_score: float = DEFAULT_HOTWORD_SCORE) -> list[Hotword]:
    """One phrase per line, optionally 'phrase:score'; blank lines and lines starting with '#' are skipped."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise HotwordError(f"cannot read hotwords file {str(p)!r}: {exc.strerror or exc}") from None
    return parse_hotwords([ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")], default_score)


class _Node:
    __slots__ = ("children", "fail", "bonus", "end", "done")

    def __init__(self, bonus: float) -> None:
        self.children: dict[int, _Node] = {}
        self.fail: Optional[_Node] = None
        self.bonus = bonus  # bonus accumulated from the root to here
        self.end = False  # a phrase ends here (or at a suffix reached by failure links)
        self.done = 0.0  # the bonus of the phrases completed on the way here: kept when a longer match fails


class ContextGraph:
    """Aho-Corasick automaton over token-id sequences with per-state bonuses.

    A beam hypothesis holds a state (a node) and a committed bonus; ``step``
    moves it by one emitted token.
    """

    def __init__(self, phrases: Sequence[tuple[Sequence[int], float]]) -> None:
        self.root = _Node(0.0)
        for ids, score in phrases:
            node = self.root
            for t in ids:
                child = node.children.get(t)
                if child is None:
                    child = node.children[t] = _Node(node.bonus + score)
                else:  # shared prefix of two phrases: the larger bonus
                    child.bonus = max(child.bonus, node.bonus + score)
                node = child
            node.end = True
        # Breadth-first failure links (the longest proper suffix that is a path from the root).
        self.root.fail = self.root
        queue = list(self.root.children.values())
        for n in queue:
            n.fail = self.root
        for n in queue:
            n.done = n.bonus if n.end else 0.0
        i = 0
        while i < len(queue):
            node = queue[i]
            i += 1
            for t, child in node.children.items():
                f = node.fail
                while f is not self.root and t not in f.children:
                    f = f.fail  # type: ignore[assignment]
                child.fail = f.children[t] if t in f.children and f.children[t] is not child else self.root
                # Breadth first: the parent's and the failure state's `done` are final by now.
                child.done = child.bonus if child.end else max(node.done, child.fail.done)
                child.end = child.end or child.fail.end
                queue.append(child)

    def step(self, node: _Node, committed: float, token: int) -> tuple[_Node, float]:
        """Move by ``token``: (new node, new committed bonus). The live bonus is committed + node.bonus."""
        n = node
        while n is not self.root and token not in n.children:
            n = n.fail  # type: ignore[assignment]
        n = n.children.get(token, self.root)
        if n is not node.children.get(token):
            # Left this node's path: phrases completed on it keep their bonus, the rest is given back.
            committed += node.done
        if n.end and not n.children:
            # A whole phrase that no longer phrase continues: keep its bonus, start matching afresh.
            return self.root, committed + n.bonus
        return n, committed
