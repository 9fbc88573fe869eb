"""AGSS-VOS video object segmentation as a service."""

__version__ = "0.1.0"
