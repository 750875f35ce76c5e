"""Datasets: the training store (writer, reader, splits), simulated dataset generation, and recordings in SigMF
(import into a store, export of simulated transmissions). Everything that writes or reads dataset files."""
