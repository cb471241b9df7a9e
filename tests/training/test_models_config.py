"""Model configs: JSON round trip, presets for every family and size, parameter
counts against the published ones (base/large are built on the meta device:
no memory is allocated)."""

from __future__ import annotations

import json

import pytest
import torch

from wavstream.training.models import (CTC_VOCAB, FAMILIES, SIZES, ModelConfig, build_model,
                                       model_from_config, preset)

# The published backbones' parameter counts (HF *Model, incl. masked_spec_embed).
BACKBONE = {
    ("wav2vec2", "base"): 94_371_712,
    ("wav2vec2", "large"): 315_438_720,  # LARGE LV-60k (layer norm extractor, conv bias)
    ("hubert", "base"): 94_371_712,
    ("hubert", "large"): 315_435_136,
    ("wavlm", "base"): 94_381_936,
    ("wavlm", "large"): 315_453_120,
}
# Totals with the pretraining heads (encoder + the objective's heads).
TOTAL = {
    ("wav2vec", "large"): 32_537_088,
    ("vq_wav2vec", "base"): 34_145_408,  # Gumbel, separate codebooks
    ("vq_wav2vec", "large"): 34_145_408,
    ("wav2vec2", "base"): 95_044_608,
    ("wav2vec2", "large"): 317_390_592,
    ("hubert", "base"): 94_697_600,
    ("hubert", "large"): 316_609_408,
}

COUNTS: dict[tuple[str, str], tuple[int, int]] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_counts():
    yield
    if COUNTS:
        print("\nparameter counts (total / backbone):")
        for (f, s), (t, b) in sorted(COUNTS.items()):
            print(f"  {f:11s} {s:6s} {t:>12,d} {b:>12,d}")


def _build(family: str, size: str, **kw):
    if size == "tiny":
        return build_model(family, size, **kw)
    with torch.device("meta"):
        return build_model(family, size, **kw)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", SIZES)
def test_json_round_trip(family, size):
    cfg = preset(family, size).replace(vocab=list(CTC_VOCAB))
    s = cfg.to_json()
    json.loads(s)  # plain JSON
    back = ModelConfig.from_json(s)
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    assert isinstance(back.conv_layers[0], tuple) and isinstance(back.vq_temp, tuple)
    assert back.stride == cfg.stride


def test_from_dict_rejects_unknown_fields():
    d = preset("wavlm").to_dict()
    d["no_such_field"] = 1
    with pytest.raises(ValueError):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError):
        preset("wavlm").replace(no_such_field=1)
    with pytest.raises(ValueError):
        build_model("wav2vec3")
    with pytest.raises(ValueError):
        build_model("wavlm", "huge")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("size", SIZES)
def test_build_and_count(family, size):
    from wavstream.training.objectives.heads import build_heads

    model = _build(family, size)
    with torch.device("meta"):  # the pretraining heads belong to the objective
        heads = build_heads(model.config)
    head_params = sum(p.numel() for p in heads.parameters()) if heads is not None else 0
    total, backbone = model.num_parameters() + head_params, model.num_parameters(backbone_only=True)
    COUNTS[(family, size)] = (total, backbone)
    assert model.stride == (160 if family in ("wav2vec", "vq_wav2vec") else 320)
    assert model.chunk_samples == model.config.chunk_frames * model.stride
    if size == "tiny":
        assert 2_000_000 <= total <= 6_000_000, total
        assert model.config.streamable
    else:
        assert not model.config.streamable  # published form
    if (family, size) in BACKBONE:
        want = BACKBONE[(family, size)]
        assert abs(backbone - want) <= 0.005 * want, (backbone, want)
    if (family, size) in TOTAL:
        want = TOTAL[(family, size)]
        assert abs(total - want) <= 0.005 * want, (total, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_ctc_head_and_config_rebuild(family):
    torch.manual_seed(0)
    m = build_model(family, "tiny", vocab=list(CTC_VOCAB))
    assert m.lm_head is not None and m.lm_head.out_features == len(CTC_VOCAB) == 29
    assert CTC_VOCAB[0] == "<blank>" and CTC_VOCAB[1] == "|"
    # a config read back from JSON builds a model with the same state-dict layout
    m2 = model_from_config(ModelConfig.from_json(m.config.to_json()))
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert list(sd) == list(sd2)
    assert all(sd[k].shape == sd2[k].shape for k in sd)
    m2.load_state_dict(sd)


def test_config_is_frozen_and_chunking_is_a_view():
    m = build_model("wav2vec2", "tiny", vocab=list(CTC_VOCAB))
    with pytest.raises(Exception):
        m.config.chunk_frames = 8  # frozen: a change is a new config
    v = m.with_chunking(8, 2)
    assert (v.config.chunk_frames, v.config.left_chunks) == (8, 2)
    assert (m.config.chunk_frames, m.config.left_chunks) == (16, 4)  # the model's own config is untouched
    assert v.lm_head is m.lm_head and v.chunk_samples == 8 * m.stride
    assert all(a is b for a, b in zip(v.parameters(), m.parameters()))
