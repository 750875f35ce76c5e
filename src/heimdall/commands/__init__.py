"""Thin shells behind each CLI subcommand: parse → call the functional core → print for a person."""
