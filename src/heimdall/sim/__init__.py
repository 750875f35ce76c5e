"""The radio simulator: propagation, shadowing fields, fading, emissions, and block generation."""
