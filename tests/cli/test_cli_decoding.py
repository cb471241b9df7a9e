"""Decoding flags of the commands: --lm (and its old name --kenlm), --hotwords, and `wavstream lm build`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from wavstream.cli.args import add_decoding_arguments, decoding_config
from wavstream.cli.main import main
from wavstream.stream.lm import load_lm

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "stream" / "samples" / "sample.wav"


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_decoding_arguments(p, lm=True, hotwords=True)
    return p.parse_args(argv)


def test_lm_flags_make_a_beam_config_and_kenlm_is_an_alias() -> None:
    assert decoding_config(_parse([])).method == "greedy"
    for flag in ("--lm", "--kenlm"):
        cfg = decoding_config(_parse([flag, "my.arpa", "--lm-alpha", "0.3", "--lm-beta", "2"]))
        assert cfg.method == "beam" and cfg.beam_size == 32
        assert (cfg.lm.path, cfg.lm.alpha, cfg.lm.beta) == ("my.arpa", 0.3, 2.0)
    assert decoding_config(_parse(["--lm", "default", "--beam-size", "4"])).beam_size == 4
    assert decoding_config(_parse(["--decoder", "beam"])).beam_size == 8


def test_bad_weights_fail_while_parsing(capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(["--lm", "default", "--lm-alpha", "-1"])
    assert "--lm-alpha: must be a number >= 0" in capsys.readouterr().err


def test_lm_build_writes_an_arpa_the_runtime_reads(tmp_path, capsys) -> None:
    text = tmp_path / "text.txt"
    text.write_text("Turn on the lights.\nturn off the lights\nTurn the music up, please!\n" * 3)
    out = tmp_path / "small.arpa.gz"
    assert main(["lm", "build", str(out), "--order", "3", "--no-corpus-text", "--text", str(text)]) == 0
    assert "3 sentences" not in capsys.readouterr().out  # 9 sentences, normalised
    lm = load_lm(out)
    assert lm.order == 3 and {"turn", "lights", "music", "please"} <= lm.vocab
    assert main(["lm", "build", str(out), "--no-corpus-text"]) == 2  # no text at all: a clear refusal
    assert "no text" in capsys.readouterr().err


def test_transcribe_with_the_default_lm_and_hotwords(tmp_path, capsys) -> None:
    hot = tmp_path / "hot.txt"
    hot.write_text("quick brown fox\n")
    assert main(["transcribe", str(SAMPLE), "--lm", "default", "--hotwords", str(hot), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"type": "final"' in out and "brown fox" in out
    bad = tmp_path / "bad.txt"
    bad.write_text("caf\u00e9\n")
    assert main(["transcribe", str(SAMPLE), "--hotwords", str(bad)]) == 2
    assert "cannot spell" in capsys.readouterr().err
    assert main(["transcribe", str(SAMPLE), "--lm", str(tmp_path / "none.arpa")]) == 2
    assert "not found" in capsys.readouterr().err
