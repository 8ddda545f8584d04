"""Unmask: deepfake checks for the videos people meet while browsing."""

__version__ = "0.1.0"
