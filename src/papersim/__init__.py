"""papersim: keep a similar-paper search model fresh."""

__version__ = "0.1.0"
