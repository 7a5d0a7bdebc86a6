"""Moved to :mod:`facegnet.draw` (one drawing module for photos and live frames); kept for existing imports."""
from facegnet.draw import KNOWN_COLOUR, UNKNOWN_COLOUR, annotate, annotation_paths

__all__ = ["KNOWN_COLOUR", "UNKNOWN_COLOUR", "annotate", "annotation_paths"]
