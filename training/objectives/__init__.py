"""Training objectives. Each is an nn.Module holding `.model` whose
forward(batch, chunk, step) returns (loss, metrics); see training/loop.py."""
