"""zeroi2v: zero-cost adaptation of pre-trained image transformers to video (ZeroI2V, ECCV 2024)."""

__version__ = "0.1.0"
