"""Hugging Face parity of the importer (docs/streaming.md): random weights built
from configs (no download), constant-initialised parameters perturbed, eval
mode, eager attention, >= 3 s of input so WavLM's log buckets are hit (and one
16.5 s run for bucket clamping). `last_hidden_state` and CTC logits must agree
within 1e-4 (fp32). Run with -s to print the largest difference per check.
"""

from __future__ import annotations


import pytest
import torch

import transformers

from wavstream.training.convert import (StateDictMismatch, from_transformers,  # noqa: E402
                                        hf_state_dict_to_wavstream, load_state_dict_any)
from wavstream.training.models import model_from_config  # noqa: E402

from common import PARITY_TOL as TOL  # noqa: E402
MAX_DIFFS: dict[str, float] = {}


@pytest.fixture(autouse=True, scope="module")
def _report():
    yield
    if MAX_DIFFS:
        print("\nHF parity, max |diff| per check (fp32):")
        for k in sorted(MAX_DIFFS):
            print(f"  {k:48s} {MAX_DIFFS[k]:.3e}")


def _record(key: str, value: float) -> float:
    MAX_DIFFS[key] = max(MAX_DIFFS.get(key, 0.0), value)
    return value


SMALL = dict(hidden_size=256, num_hidden_layers=3, num_attention_heads=4, intermediate_size=512,
             conv_dim=(128,) * 7, attn_implementation="eager", vocab_size=32)

# name -> (config class, model stem, extra config)
KINDS = {
    "wav2vec2-group-postLN": ("Wav2Vec2Config", "Wav2Vec2", dict(feat_extract_norm="group")),
    "wav2vec2-layer-bias-preLN": ("Wav2Vec2Config", "Wav2Vec2",
                                  dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)),
    "hubert-base-style": ("HubertConfig", "Hubert", dict(feat_extract_norm="group")),
    "wavlm-base-style": ("WavLMConfig", "WavLM", dict(feat_extract_norm="group")),
    "wavlm-large-style": ("WavLMConfig", "WavLM", dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
}


def perturb_constants(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """LayerNorm gammas/betas, biases, weight-norm g and WavLM gate constants
    start as constants; perturb them so swapped or missing tensors show up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1 or "gru_rel_pos_const" in name or "original0" in name or "weight_g" in name:
                p.add_(scale * torch.randn(p.shape, generator=g))


def hf_model(kind: str, head: str = "model", seed: int = 0, **extra):
    cfg_cls, stem, kw = KINDS[kind]
    cfg = getattr(transformers, cfg_cls)(**{**SMALL, **kw, **extra})
    cls = getattr(transformers, stem + {"model": "Model", "ctc": "ForCTC", "pretraining": "ForPreTraining"}[head])
    torch.manual_seed(seed)
    m = cls(cfg).eval()
    perturb_constants(m, seed)
    return m


def wave(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(16000 * seconds) + 123, generator=g)


def _backbone(hf):
    return getattr(hf, hf.base_model_prefix) if hasattr(hf, hf.base_model_prefix) else hf


@pytest.mark.parametrize("head", ["model", "ctc"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_parity(kind, head):
    hf = hf_model(kind, head)
    ours = from_transformers(hf).eval()
    c = ours.config
    assert c.conv_padding == "none" and c.chunk_frames == 0 and not c.pos_conv_causal
    assert not c.normalize_waveform
    assert c.extractor_mode == KINDS[kind][2]["feat_extract_norm"]
    x = wave(3.2, seed=1)
    with torch.no_grad():
        out = ours(x)
        if head == "model":
            ref = hf(x).last_hidden_state
        else:
            ref = _backbone(hf)(x).last_hidden_state
            logits = hf(x).logits
    assert ref.shape == out.features.shape and ref.shape[1] >= 160
    d = _record(f"{kind} last_hidden_state", (ref - out.features).abs().max().item())
    assert d <= TOL
    if head == "ctc":
        assert c.vocab == tuple(f"<{i}>" for i in range(32))
        assert out.logits.shape == logits.shape
        d = _record(f"{kind} ForCTC logits", (logits - out.logits).abs().max().item())
        assert d <= TOL
    else:
        assert out.logits is None


def test_parity_wavlm_long_input_bucket_clamp():
    """> 16 s (800+ frames): relative distances beyond max_distance clamp."""
    hf = hf_model("wavlm-base-style", hidden_size=128, num_hidden_layers=2, intermediate_size=256,
                  conv_dim=(128,) * 7)
    ours = from_transformers(hf).eval()
    x = wave(16.6, seed=2)
    with torch.no_grad():
        ref, out = hf(x).last_hidden_state, ours(x).features
    assert ref.shape[1] > 800
    assert _record("wavlm-base-style 16.6 s (bucket clamp)", (ref - out).abs().max().item()) <= TOL


@pytest.mark.parametrize("kind", ["wav2vec2-layer-bias-preLN", "wavlm-large-style"])
def test_parity_padded_batch(kind):
    """Layer-norm extractor: a zero-padded batch with attention_mask equals our
    model with `lengths` on every valid frame."""
    hf = hf_model(kind, "ctc", seed=3)
    ours = from_transformers(hf).eval()
    x = wave(3.5, batch=3, seed=3)
    lengths = torch.tensor([x.shape[1], 40_123, 27_777])
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    x = x * mask
    with torch.no_grad():
        ref = hf(x, attention_mask=mask.long())
        # (not ref.hidden_states[-1]: HF reports the pre-final-LN state there for pre-LN models)
        hid_ref = _backbone(hf)(x, attention_mask=mask.long()).last_hidden_state
        out = ours(x, lengths)
    frames = out.lengths.tolist()
    d_h = d_l = 0.0
    for i, n in enumerate(frames):
        d_h = max(d_h, (hid_ref[i, :n] - out.features[i, :n]).abs().max().item())
        d_l = max(d_l, (ref.logits[i, :n] - out.logits[i, :n]).abs().max().item())
    # the frame count per utterance is HF's (unpadded conv formula)
    hf_frames = _backbone(hf)._get_feat_extract_output_lengths(lengths).tolist()
    assert frames == hf_frames
    _record(f"{kind} padded batch hidden", d_h)
    _record(f"{kind} padded batch logits", d_l)
    assert d_h <= TOL and d_l <= TOL


def _old_spelling(sd):
    out = {}
    for k, v in sd.items():
        k = k.replace("parametrizations.weight.original0", "weight_g")
        k = k.replace("parametrizations.weight.original1", "weight_v")
        out[k] = v
    return out


@pytest.mark.parametrize("head", ["model", "ctc"])
def test_both_weight_norm_spellings_load(head):
    hf = hf_model("wavlm-base-style", head, seed=4)
    sd_new = hf.state_dict()
    assert any("parametrizations.weight.original0" in k for k in sd_new)
    sd_old = _old_spelling(sd_new)
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in sd_old)
    assert not any("parametrizations" in k for k in sd_old)
    ref_model = from_transformers(hf).eval()
    ours = model_from_config(ref_model.config).eval()
    load_state_dict_any(ours, sd_old)
    for k, v in ref_model.state_dict().items():
        if k != "masked_spec_embed":
            assert torch.equal(v, ours.state_dict()[k]), k
    x = wave(3.0, seed=5)
    with torch.no_grad():
        ref = hf(x)
        ref = ref.last_hidden_state if head == "model" else ref.logits
        out = ours(x)
        out = out.features if head == "model" else out.logits
    assert _record(f"old weight_g/weight_v spelling ({head})", (ref - out).abs().max().item()) <= TOL


def test_strict_loading_names_keys():
    hf = hf_model("wav2vec2-group-postLN", "ctc", seed=6)
    ours = from_transformers(hf)
    sd = dict(hf.state_dict())
    # missing key
    bad = dict(sd)
    del bad["wav2vec2.encoder.layers.1.attention.k_proj.weight"]
    with pytest.raises(StateDictMismatch, match=r"encoder\.layers\.1\.attention\.k_proj\.weight"):
        load_state_dict_any(ours, bad)
    # unexpected key
    bad = dict(sd)
    bad["wav2vec2.encoder.layers.9.attention.k_proj.weight"] = torch.zeros(1)
    with pytest.raises(StateDictMismatch, match="unexpected"):
        load_state_dict_any(ours, bad)
    # wrong shape
    bad = dict(sd)
    bad["lm_head.weight"] = torch.zeros(5, 256)
    with pytest.raises(StateDictMismatch, match="shape"):
        load_state_dict_any(ours, bad)
    # both spellings at once is ambiguous
    bad = dict(sd)
    bad["wav2vec2.encoder.pos_conv_embed.conv.weight_g"] = sd["wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
    with pytest.raises(ValueError):
        hf_state_dict_to_wavstream(bad)
    # non-strict loads what matches
    bad = dict(sd)
    del bad["lm_head.bias"]
    load_state_dict_any(ours, bad, strict=False)


def test_missing_masked_spec_embed_tolerated():
    hf = hf_model("hubert-base-style", "model", seed=7, mask_time_prob=0.0, mask_feature_prob=0.0)
    assert "masked_spec_embed" not in hf.state_dict()
    ours = from_transformers(hf).eval()
    assert ours.masked_spec_embed.shape == (256,)
    x = wave(3.0, seed=7)
    with torch.no_grad():
        d = (hf(x).last_hidden_state - ours(x).features).abs().max().item()
    assert _record("hubert without masked_spec_embed", d) <= TOL


def test_vocab_names_from_tokenizer_dict():
    hf = hf_model("wav2vec2-group-postLN", "ctc", seed=8, vocab_size=5)
    ours = from_transformers(hf, vocab={"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4})
    assert ours.config.vocab == ("<pad>", "<s>", "</s>", "<unk>", "|")
    ours = from_transformers(hf, vocab=["a", "b", "c", "d", "e"])
    assert ours.config.vocab == ("a", "b", "c", "d", "e")
    with pytest.raises(ValueError):
        from_transformers(hf, vocab=["a"])


def test_parity_wav2vec2_pretraining_heads():
    hf = hf_model("wav2vec2-group-postLN", "pretraining", seed=9)
    from wavstream.training.convert import heads_from_transformers

    ours = from_transformers(hf).eval()
    heads = heads_from_transformers(hf).eval()  # the objective's heads, not the encoder's
    assert ours.config.quantizer == "gumbel"
    assert not any(k.startswith(("quantizer.", "project_")) for k in ours.state_dict())
    x = wave(3.0, seed=9)
    with torch.no_grad():
        ref = hf(x)
        out = ours(x)
        proj = heads.project_hid(out.features)
        q = heads.quantizer(out.norm_features)
        proj_q = heads.project_q(q.x)
    d1 = _record("Wav2Vec2ForPreTraining projected_states", (ref.projected_states - proj).abs().max().item())
    d2 = _record("Wav2Vec2ForPreTraining projected_quantized_states",
                 (ref.projected_quantized_states - proj_q).abs().max().item())
    assert d1 <= TOL and d2 <= TOL


@pytest.mark.parametrize("kind", ["wav2vec2-group-postLN", "wavlm-base-style"])
def test_parity_real_base_dims(kind):
    hf = hf_model(kind, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, conv_dim=(512,) * 7)
    ours = from_transformers(hf).eval()
    x = wave(3.0, seed=10)
    with torch.no_grad():
        d = (hf(x).last_hidden_state - ours(x).features).abs().max().item()
    assert _record(f"{kind} BASE dims", d) <= TOL
