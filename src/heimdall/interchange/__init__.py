"""Recordings in and out: SigMF collections (one per transmission) ↔ training stores."""

MATCH_TOLERANCE_M = 100.0  # default: a receiver given by position within this distance of a known one is that one
