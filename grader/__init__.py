"""dllab-grader: grade PyTorch deep-learning lab submissions."""

__version__ = "0.1.0"
