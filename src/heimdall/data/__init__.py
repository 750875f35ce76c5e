"""Training stores: writing and reading the per-split HDF5 files."""
