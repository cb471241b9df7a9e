"""The Triton engine's flags: --backend triton --triton-url/--triton-model, or --engine triton://HOST:PORT/MODEL."""

from __future__ import annotations

import argparse

import pytest

from wavstream.cli.args import add_model_arguments, engine_options


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_model_arguments(p)
    return p.parse_args(list(argv))


def test_both_forms_give_the_same_engine_options() -> None:
    short = engine_options(_parse("--engine", "triton://gpu1:8001/asr", "--latency-ms", "160"))
    long = engine_options(_parse("--backend", "triton", "--triton-url", "gpu1:8001", "--triton-model", "asr",
                                 "--latency-ms", "160"))
    assert short == long == {"backend": "triton", "url": "gpu1:8001", "model": "asr", "latency_ms": 160}
    assert engine_options(_parse("--backend", "triton")) == {"backend": "triton", "url": "127.0.0.1:8001",
                                                            "model": "wavstream"}
    assert engine_options(_parse())["backend"] == "onnxruntime"


@pytest.mark.parametrize("uri", ["http://gpu1:8001/asr", "triton://gpu1:8001", "triton:///asr", "triton://h:1/a/b"])
def test_a_bad_engine_uri_is_refused_by_argparse(uri: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse("--engine", uri)
    assert exc.value.code == 2
    assert "expected triton://HOST:PORT/MODEL" in capsys.readouterr().err
