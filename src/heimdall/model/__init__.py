"""The localization network and its loss (PyTorch)."""
