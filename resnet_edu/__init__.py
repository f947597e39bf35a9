"""resnet-edu: residual networks, derived, measured and trained."""

__version__ = "0.1.0"
