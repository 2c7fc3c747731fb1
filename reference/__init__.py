"""Reference solutions: one self-contained file per lab part, `train(*, ...) -> dict`."""
