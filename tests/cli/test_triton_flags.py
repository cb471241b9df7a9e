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


def test_triton_repo_decode_writes_the_decoding_model(tmp_path) -> None:
    """`wavstream triton-repo BUNDLE OUT --decode --decoder beam --beam-size 4`: NAME_decode with the template,
    the bundle, its decoding and the bundle's config.json (base64) in its parameters; validated."""
    import base64
    import json

    from toy_bundle import build_toy_bundle

    from wavstream.cli.main import main
    from wavstream.stream.triton.validate import parse_model_config

    toy = build_toy_bundle(tmp_path / "toy")
    assert main(["triton-repo", str(toy), str(tmp_path / "repo"), "--only", "python", "--decode", "--decoder", "beam",
                 "--beam-size", "4"]) == 0
    folder = tmp_path / "repo" / "wavstream_decode"
    assert (folder / "1" / "model.py").read_text().startswith('"""wavstream\'s Triton python-backend model that also')
    assert (folder / "1" / "bundle" / "config.json").is_file()
    cfg = parse_model_config((folder / "config.pbtxt").read_text())
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    assert params["decoder"] == "beam" and params["beam_size"] == "4"
    assert json.loads(base64.b64decode(params["bundle_config"])) == json.loads((toy / "config.json").read_text())
    assert [i.name for i in cfg.input] == ["samples", "real_samples", "options"]
    assert [o.name for o in cfg.output] == ["events", "features"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["wavstream", "wavstream_decode"]


def test_serve_decode_in_triton_needs_a_triton_engine(capsys: pytest.CaptureFixture) -> None:
    from wavstream.cli.main import main

    assert main(["serve", "--decode-in-triton", "--port", "0"]) == 2
    assert "--decode-in-triton needs --engine triton://" in capsys.readouterr().err
