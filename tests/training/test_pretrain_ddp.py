"""`wavstream train pretrain` under torchrun: 2 CPU processes (gloo, DDP)
run a few steps and hold identical weights afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import torch
import safetensors  # noqa: F401
import sklearn  # noqa: F401

from test_objectives import TT, make_corpus  # noqa: E402

# Runs the real CLI entry (parse args -> run_pretrain -> loop.train) and, after
# training, dumps each rank's weights so the test can compare them.
HELPER = textwrap.dedent("""
    import sys, torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    import wavstream.training.loop as loop

    orig = loop.train

    def train(objective, dataset, cfg, **kw):
        before = {k: v.detach().clone() for k, v in objective.model.state_dict().items()}
        res = orig(objective, dataset, cfg, **kw)
        rank = dist.get_rank() if dist.is_initialized() else 0
        sd = {k: v.detach().contiguous().cpu() for k, v in objective.model.state_dict().items()}
        save_file(sd, f"{cfg.out_dir}/rank{rank}.safetensors")
        changed = any(not torch.equal(before[k], sd[k]) for k in sd)
        open(f"{cfg.out_dir}/rank{rank}.json", "w").write(
            '{"changed": %s, "world": %d}' % ("true" if changed else "false",
                                              dist.get_world_size() if dist.is_initialized() else 1))
        return res

    loop.train = train
    from wavstream.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("family", ["wav2vec2", "hubert"])
def test_torchrun_two_ranks_identical_weights(tmp_path, family):
    from safetensors.torch import load_file

    tsv = make_corpus(tmp_path / "corpus", n=8, seed=1, seconds=(0.6, 1.0))
    helper = tmp_path / "helper.py"
    helper.write_text(HELPER)
    out = tmp_path / "run"
    sets = dict(TT, vq_vars=16, vq_dim=32) if family == "wav2vec2" else dict(TT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(helper), "train", "pretrain", "--family", family, "--train", str(tsv), "--out", str(out),
           "--steps", "3", "--batch-seconds", "2", "--threads", "1", "--ckpt-every", "1000",
           "--num-negatives", "10", "--num-clusters", "8", "--kmeans-n-init", "1", "--no-resume"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for rank in (0, 1):
        info = json.loads((out / f"rank{rank}.json").read_text())
        assert info == {"changed": True, "world": 2}
    a, b = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs between ranks"
    # rank 0 wrote the checkpoint, log and labels (HuBERT) once
    assert (out / "final" / "model.safetensors").exists()
    cfg = json.loads((out / "final" / "config.json").read_text())
    assert cfg["objective"] == family and cfg["step"] == 3
    if family == "hubert":
        assert (out / "labels" / "train.npy").exists() and cfg["model"]["num_label_classes"] == 12
