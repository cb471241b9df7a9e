"""wavstream.training: models, data, objectives and training loops (needs torch)."""
