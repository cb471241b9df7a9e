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


def test_published_wav2vec_rows_are_the_published_stack_made_streaming() -> None:
    from wavstream.bench.offline_ratio import published_w2v1_streaming
    from wavstream.training.models import preset

    for fam in ("wav2vec", "vq_wav2vec"):
        m = published_w2v1_streaming(fam, 320)
        cfg, pub = m.config, preset(fam, "large")
        # the published layer stacks, unchanged ...
        assert cfg.conv_layers == pub.conv_layers and cfg.agg_layers == pub.agg_layers
        assert cfg.agg_layers[-1] == (512, 13, 1)
        # ... in streaming form: per-frame norms, causal padding, 32 frames (320 ms) per chunk
        assert cfg.agg_norm == "layer" and cfg.conv_padding == "causal" and cfg.streamable and not pub.streamable
        assert cfg.chunk_frames == 32
