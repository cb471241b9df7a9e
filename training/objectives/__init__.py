"""Training objectives. Each is an `Objective` (objectives/base.py) holding the
encoder `.model` and its own pretraining `.heads`, whose forward(batch, chunk,
step) returns (loss, metrics); see training/loop.py. `build_objective`
(objectives/build.py) makes a family's pretraining objective; the settings
dataclasses are in objectives/settings.py."""
