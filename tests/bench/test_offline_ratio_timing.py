"""The streaming / offline timing helper: alternation, best-of, and the per-repeat spread."""

from __future__ import annotations

import pytest

from wavstream.bench.offline_ratio import _alternate, _alternate_pairs


class _FakeClock:
    """A clock that only moves when a timed function says how long it took."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def task(self, name: str, durations: list[float]):
        it = iter(durations)

        def run() -> None:
            self.calls.append(name)
            self.now += next(it)
        return run


def test_pairs_alternate_and_keep_each_repeat() -> None:
    clock = _FakeClock()
    off = clock.task("offline", [2.0, 1.0, 3.0])
    stream = clock.task("streaming", [2.5, 1.75, 2.0])
    pairs = _alternate_pairs(off, stream, 3, clock)
    assert clock.calls == ["offline", "streaming"] * 3  # alternated, offline first
    assert pairs == [pytest.approx((2.0, 2.5)), pytest.approx((1.0, 1.75)), pytest.approx((3.0, 2.0))]


def test_best_of_each_side_lies_within_the_repeats_ratios() -> None:
    clock = _FakeClock()
    # the bests come from different repeats: offline's from the 2nd, streaming's from the 3rd
    off_t, str_t = [2.0, 1.0, 3.0], [2.5, 1.8, 1.5]
    best = _alternate(clock.task("o", off_t), clock.task("s", str_t), 3, clock)
    assert best == pytest.approx((1.0, 1.5))
    ratios = [s / o for o, s in zip(off_t, str_t)]  # 1.25, 1.8, 0.5
    assert min(ratios) <= best[1] / best[0] <= max(ratios)
