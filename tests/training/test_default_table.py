"""training/recipes/default_table.py: the README table is built from eval_v2.sh's lines, keyed by data and setting."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("default_table", ROOT / "training/recipes/default_table.py")
default_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(default_table)


def _line(cer, data="data/corpus_v2/dev.tsv", chunk=320, full=False, channel="clean", **kw):
    return {"cer": cer, "wer": cer + 0.3, "data": data, "chunk_ms": None if full else chunk,
            "full_context": full, "channel": channel, **kw}


def test_rows_are_picked_by_data_setting_channel_and_engine(tmp_path, capsys):
    eng = lambda a, b: {"espeak": {"cer": a, "wer": 0.5}, "kokoro": {"cer": b, "wer": 0.6}}  # noqa: E731
    ckpt = [_line(0.41, chunk=160, by_engine=eng(0.31, 0.51)), _line(0.42, by_engine=eng(0.32, 0.52)),
            _line(0.43, chunk=640, by_engine=eng(0.33, 0.53)), _line(0.44, full=True, by_engine=eng(0.34, 0.54)),
            _line(0.61, channel="telephone"), _line(0.71, data="runs/human/pocketsphinx"),
            _line(0.72, data="runs/human/alsa")]
    bundle = [_line(0.421, engine="onnxruntime"), _line(0.425, engine="onnxruntime int8")]
    (tmp_path / "c.jsonl").write_text("\n".join(map(json.dumps, ckpt)))
    (tmp_path / "b.jsonl").write_text("\n".join(map(json.dumps, bundle)) + "\n")
    assert default_table.main([str(tmp_path / "c.jsonl"), str(tmp_path / "b.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "| **all engines** (CER / WER) | 0.410 / 0.710 | 0.420 / 0.720 | 0.430 / 0.730 | 0.440 / 0.740 |" in out
    assert "| kokoro (CER) | 0.510 | 0.520 | 0.530 | 0.540 |" in out
    assert "| dev through a telephone line (band-pass + GSM) | 0.610 / 0.910 |" in out
    assert "| human speech: ALSA test phrases | 0.720 / 1.020 |" in out
    assert "| dev, exported bundle, ONNX Runtime int8 | 0.425 / 0.725 |" in out


def test_a_missing_measurement_is_a_dash_not_an_error(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text(json.dumps(_line(0.4)))
    (tmp_path / "b.jsonl").write_text("")
    assert default_table.main([str(tmp_path / "c.jsonl"), str(tmp_path / "b.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "| dev through a telephone line (band-pass + GSM) | — |" in out
    assert "| 0.400 / 0.700 |" in out
