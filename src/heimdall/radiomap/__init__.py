"""The radio-map localizer: per-receiver mean-power maps (physics + learned residual fields) and a grid
posterior over the transmitter position with the transmit power marginalised (docs/RADIOMAP.md)."""
