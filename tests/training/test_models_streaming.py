"""Streaming equals offline, for all five families (the heart of the project).

Rule for partial chunks (training/models/encoder.py): the streaming runtime
zero-pads the last partial chunk to C*stride samples; the offline form
zero-pads the utterance the same way, so both see the same zeros, and of the
padded chunk only the first ceil(samples / stride) frames are real
(`out.lengths`). Every check here uses tiny configs, seeded random weights
with the constant-initialised parameters perturbed, fp32, eval mode.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wavstream.training.models import CTC_VOCAB, FAMILIES, build_model, stream_chunks

from common import PARITY_TOL as TOL  # noqa: E402
MAX_DIFFS: dict[str, float] = {}  # printed at the end with -s


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on 2 shared cores
    yield
    torch.set_num_threads(n)
    if MAX_DIFFS:
        print("\nstreaming vs offline, max |diff| per check:")
        for k in sorted(MAX_DIFFS):
            print(f"  {k:40s} {MAX_DIFFS[k]:.3e}")


def _record(key: str, value: float) -> None:
    MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), value)


def perturb_constants(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Give LayerNorm/GroupNorm affines, biases and WavLM gate constants
    non-trivial values, so that swapped or ignored tensors show up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1 or "gru_rel_pos_const" in name:
                p.add_(scale * torch.randn(p.shape, generator=g))


_MODELS: dict[str, torch.nn.Module] = {}


def tiny(family: str):
    if family not in _MODELS:
        torch.manual_seed(1234)
        m = build_model(family, "tiny", vocab=list(CTC_VOCAB))
        perturb_constants(m)
        _MODELS[family] = m.eval()
    return _MODELS[family]


def make_batch(model, chunk_frames: int, left_chunks: int, seed: int = 0):
    """3 utterances of different lengths, none a multiple of the stride or
    chunk, the longest long enough to roll the K/V caches over."""
    stride = model.stride
    frames = max((left_chunks + 2) * chunk_frames + 5, 12)
    longest = frames * stride + 37
    lengths = torch.tensor([longest, int(longest * 0.7) + 11, int(longest * 0.4) + 201])
    assert all(int(n) % stride for n in lengths)
    g = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(3, longest, generator=g)
    wave = wave * (torch.arange(longest)[None, :] < lengths[:, None])
    return wave, lengths


def run_stream(model, wave: torch.Tensor, steps: int | None = None):
    """Feed (B, L) through step() chunk by chunk (last chunk zero-padded): the reference loop."""
    out = stream_chunks(model, wave, steps=steps)
    return out.features, out.logits, out.codes, out.state


def _max_valid_diff(a: torch.Tensor, b: torch.Tensor, lengths: torch.Tensor) -> float:
    d = 0.0
    for i, n in enumerate(lengths.tolist()):
        d = max(d, (a[i, :n] - b[i, :n]).abs().max().item())
    return d


# wav2vec / vq-wav2vec have no attention, so left_chunks does not apply to them.
CASES = [(f, c, left) for f in FAMILIES for c in (1, 4, 16)
         for left in ((1, 4) if f in ("wav2vec2", "hubert", "wavlm") else (0,))]


@pytest.mark.parametrize("family,chunk_frames,left_chunks", CASES)
def test_stream_equals_offline(family, chunk_frames, left_chunks):
    model = tiny(family)
    model = model.with_chunking(chunk_frames, left_chunks)
    wave, lengths = make_batch(model, chunk_frames, left_chunks, seed=chunk_frames * 10 + left_chunks)
    with torch.no_grad():
        off = model(wave, lengths)
        feats, logits, codes, _ = run_stream(model, wave)
    T = off.features.shape[1]
    assert T == int(off.lengths.max())
    assert off.lengths.tolist() == [math.ceil(int(n) / model.stride) for n in lengths]
    assert feats.shape[1] >= T
    df = _max_valid_diff(feats, off.features, off.lengths)
    dl = _max_valid_diff(logits, off.logits, off.lengths)
    # Frames past an utterance's end see the same zeros in both forms, so they match too.
    dall = (feats[:, :T] - off.features).abs().max().item()
    _record(f"{family} features", df)
    _record(f"{family} logits", dl)
    assert df <= TOL, f"features differ by {df}"
    assert dl <= TOL, f"logits differ by {dl}"
    assert dall <= TOL
    if family == "vq_wav2vec":
        assert codes is not None and off.codes is not None
        for i, n in enumerate(off.lengths.tolist()):
            assert torch.equal(codes[i, :n], off.codes[i, :n])


@pytest.mark.parametrize("family", FAMILIES)
def test_causality(family):
    """Changing audio after chunk k changes no output up to chunk k, offline or streaming."""
    model = tiny(family)
    C, L, k = 4, 1, 2
    model = model.with_chunking(C, L)
    cs = model.chunk_samples
    g = torch.Generator().manual_seed(7)
    a = 0.1 * torch.randn(2, 7 * cs + 55, generator=g)
    b = a.clone()
    b[:, (k + 1) * cs:] = 0.3 * torch.randn(b[:, (k + 1) * cs:].shape, generator=g)
    upto = (k + 1) * C
    with torch.no_grad():
        oa, ob = model(a), model(b)
        sa, sla, _, _ = run_stream(model, a)
        sb, slb, _, _ = run_stream(model, b)
    assert (oa.features[:, :upto] - ob.features[:, :upto]).abs().max().item() <= 1e-6
    assert (oa.logits[:, :upto] - ob.logits[:, :upto]).abs().max().item() <= 1e-6
    assert (sa[:, :upto] - sb[:, :upto]).abs().max().item() <= 1e-6
    assert (sla[:, :upto] - slb[:, :upto]).abs().max().item() <= 1e-6
    # ... and the change does show up later (the test is not vacuous).
    assert (oa.features[:, upto:] - ob.features[:, upto:]).abs().max().item() > 1e-3
    assert (sa[:, upto:] - sb[:, upto:]).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_state_shapes_fixed(family):
    model = tiny(family)
    model = model.with_chunking(4, 4)
    specs = model.state_specs()
    state = model.init_state(2)
    assert len(state) == len(specs) and specs[0].name == "frames_seen"
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for i in range(50):
            feats, logits, state = model.step(0.1 * torch.randn(2, model.chunk_samples, generator=g), state)
            assert feats.shape == (2, 4, model.config.feature_dim)
            assert logits.shape == (2, 4, len(CTC_VOCAB))
            assert len(state) == len(specs)
            for s, t in zip(specs, state):
                assert tuple(t.shape) == (2, *s.shape), s.name
                assert t.dtype == s.dtype, s.name
            assert state[0].tolist() == [[4 * (i + 1)]] * 2  # (B, 1)
            assert torch.isfinite(feats).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_step_rejects_bad_inputs(family):
    model = tiny(family)
    model = model.with_chunking(4, 1)
    state = model.init_state(2)
    cs = model.chunk_samples
    with pytest.raises(ValueError):
        model.step(torch.zeros(2, cs - 1), state)
    with pytest.raises(ValueError):
        model.step(torch.zeros(2, cs + model.stride), state)
    with pytest.raises(ValueError):
        model.step(torch.zeros(cs), state)
    with pytest.raises(ValueError):
        model.step(torch.zeros(3, cs), state)  # batch differs from the state's
    with pytest.raises(ValueError):
        model.step(torch.zeros(2, cs), state[:-1])
    if len(state) > 1:
        bad = list(state)
        bad[-1] = torch.zeros(2, *[d + 1 for d in bad[-1].shape[1:]])
        with pytest.raises(ValueError):
            model.step(torch.zeros(2, cs), tuple(bad))


# ---------------------------------------------------------------------------
# to_streaming


def test_to_streaming_wav2vec1_published_form():
    from wavstream.training.convert import to_streaming

    torch.manual_seed(5)
    pub = build_model("wav2vec", "tiny", extractor_mode="group1", agg_norm="group1", conv_padding="none",
                      vocab=list(CTC_VOCAB))
    perturb_constants(pub)
    assert not pub.config.streamable
    live = to_streaming(pub.eval(), chunk_frames=4, left_chunks=0).eval()
    assert live.config.streamable
    assert live.config.extractor_mode == "layer" and live.config.agg_norm == "layer"
    # affine parameters carried over
    sd0, sd1 = pub.state_dict(), live.state_dict()
    assert set(sd0) == set(sd1)
    for k in sd0:
        assert torch.equal(sd0[k], sd1[k]), k
    wave, lengths = make_batch(live, 4, 0)
    with torch.no_grad():
        off = live(wave, lengths)
        feats, logits, _, _ = run_stream(live, wave)
    d = max(_max_valid_diff(feats, off.features, off.lengths), _max_valid_diff(logits, off.logits, off.lengths))
    _record("to_streaming wav2vec1", d)
    assert d <= TOL


def _hf_small(kind: str):
    import transformers
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                  attn_implementation="eager", vocab_size=12)
    if kind == "wav2vec2-group":
        return transformers.Wav2Vec2ForCTC(transformers.Wav2Vec2Config(**common))
    if kind == "wavlm-layer":
        return transformers.WavLMForCTC(transformers.WavLMConfig(
            feat_extract_norm="layer", do_stable_layer_norm=True, **common))
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["wav2vec2-group", "wavlm-layer"])
@pytest.mark.parametrize("chunk_frames,left_chunks", [(4, 2), (1, 4)])
def test_to_streaming_imported(kind, chunk_frames, left_chunks):
    from wavstream.training.convert import from_transformers, to_streaming

    torch.manual_seed(11)
    hf = _hf_small(kind).eval()
    perturb_constants(hf, seed=2)
    pub = from_transformers(hf).eval()
    live = to_streaming(pub, chunk_frames, left_chunks).eval()
    c = live.config
    assert c.streamable and c.conv_padding == "causal" and c.extractor_mode == "layer"
    assert c.pos_conv_causal and c.pos_conv_kernel == pub.config.pos_conv_kernel // 2 + 1
    assert (c.chunk_frames, c.left_chunks) == (chunk_frames, left_chunks)
    assert not c.normalize_waveform
    assert pub.config.chunk_frames == 0 and not pub.config.pos_conv_causal  # the source is untouched
    sd_pub, sd_live = pub.state_dict(), live.state_dict()
    ln0 = "feature_extractor.conv_layers.0.layer_norm."
    for k in ("weight", "bias"):  # GroupNorm or LayerNorm affine of layer 0 carried over
        assert torch.equal(sd_pub[ln0 + k], sd_live[ln0 + k])
    if kind == "wav2vec2-group":  # layers 1.. gain identity-affine LayerNorms
        assert torch.equal(sd_live["feature_extractor.conv_layers.3.layer_norm.weight"], torch.ones(32))
        assert torch.equal(sd_live["feature_extractor.conv_layers.3.layer_norm.bias"], torch.zeros(32))
    for k, v in sd_pub.items():  # everything else is copied unchanged
        if not k.startswith(("encoder.pos_conv_embed.conv.weight", "feature_extractor")):
            assert torch.equal(v, sd_live[k]), k
    wave, lengths = make_batch(live, chunk_frames, left_chunks, seed=4)
    with torch.no_grad():
        off = live(wave, lengths)
        feats, logits, _, _ = run_stream(live, wave)
    d = max(_max_valid_diff(feats, off.features, off.lengths), _max_valid_diff(logits, off.logits, off.lengths))
    _record(f"to_streaming {kind}", d)
    assert d <= TOL


def test_to_streaming_keeps_what_it_claims():
    """The documented exact parts: (1) a layer-norm extractor, made causal,
    equals the published extractor on the input delayed by the total left
    padding (80 samples) away from the start; (2) the causal positional conv
    equals the published one with its future taps zeroed."""
    from wavstream.training.convert import from_transformers, to_streaming

    torch.manual_seed(12)
    hf = _hf_small("wavlm-layer").eval()
    perturb_constants(hf, seed=3)
    pub = from_transformers(hf).eval()
    live = to_streaming(pub, 4, 1).eval()
    fe_pub, fe_live = pub.feature_extractor, live.feature_extractor
    shift, jump = 0, 1  # total left padding in samples
    for b in fe_live.conv_layers:
        shift += b.pad * jump
        jump *= b.stride
    assert shift == 80
    x = 0.1 * torch.randn(1, 320 * 40)
    with torch.no_grad():
        y_live = fe_live(x)  # frame t covers samples up to 320(t+1)
        y_pub = fe_pub(F.pad(x, (shift, 0)))  # frame t covers delayed samples 320t .. 320t+400
        skip = 4  # the first frames of the causal form see its zero padding
        n = min(y_live.shape[2], y_pub.shape[2])
        d1 = (y_live[:, :, skip:n] - y_pub[:, :, skip:n]).abs().max().item()
    _record("to_streaming extractor shift", d1)
    assert d1 <= 1e-5

    # positional conv: zero the published future taps (d = k - K//2 > 0), compare.
    K = pub.config.pos_conv_kernel
    pc_pub, pc_live = pub.encoder.pos_conv_embed, live.encoder.pos_conv_embed
    with torch.no_grad():
        g = pc_pub.conv.weight_g.clone()
        g[..., K // 2 + 1:] = 0
        w_masked = g * pc_pub.conv.weight_v / pc_pub.conv.weight_v.norm(dim=(0, 1), keepdim=True)
        h = torch.randn(1, 30, pub.config.hidden_size)
        ht = F.pad(h.transpose(1, 2), (K // 2, K // 2))
        ref = F.gelu(F.conv1d(ht, w_masked, pc_pub.conv.bias, groups=pc_pub.conv.groups)[:, :, :30]).transpose(1, 2)
        d2 = (pc_live(h) - ref).abs().max().item()
        # keeping the full kernel: the extra past taps start at exactly zero weight
        live128 = to_streaming(pub, 4, 1, pos_conv_kernel=K).eval()
        d3 = (live128.encoder.pos_conv_embed(h) - ref).abs().max().item()
    _record("to_streaming pos conv", max(d2, d3))
    assert d2 <= 1e-5 and d3 <= 1e-5


def test_to_streaming_rejects_unbounded():
    from wavstream.training.convert import to_streaming

    pub = build_model("wav2vec2", "tiny", conv_padding="none", extractor_mode="group", pos_conv_causal=False,
                      chunk_frames=0, left_chunks=-1)
    with pytest.raises(ValueError):
        to_streaming(pub, 0, 1)
    with pytest.raises(ValueError):
        to_streaming(pub, 4, -1)
    with pytest.raises(ValueError):
        to_streaming(pub, 4, 1, pos_conv_kernel=pub.config.pos_conv_kernel // 2)


def test_mask_docstring_example_holds():
    import doctest

    from wavstream.training.models import streaming

    assert doctest.testmod(streaming).failed == 0
