"""Recordings in and out: SigMF collections (one per transmission) ↔ training stores."""
