"""The cells a posterior is computed on: a regular grid of cell centres in the local frame (metres)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class MapGrid:
    """ny × nx cells of spacing_m; cell (j, i) is centred at (east0_m + i·spacing_m, north0_m + j·spacing_m).

    Cells are numbered row-major (index j·nx + i). `coarse_factor` groups factor × factor cells into the
    blocks of the first, pruning pass of a posterior.
    """

    east0_m: float
    north0_m: float
    spacing_m: float
    nx: int
    ny: int
    coarse_factor: int = 4

    @classmethod
    def over(cls, bounds_m: tuple[float, float, float, float], spacing_m: float, coarse_factor: int = 4) -> MapGrid:
        """Cells covering (east_min, north_min, east_max, north_max)."""
        e0, n0, e1, n1 = bounds_m
        if not spacing_m > 0:
            raise ValueError(f"spacing_m: expected > 0, got {spacing_m}")
        nx, ny = max(1, int(np.ceil((e1 - e0) / spacing_m))), max(1, int(np.ceil((n1 - n0) / spacing_m)))
        if nx * ny > MAX_CELLS:
            raise ValueError(f"spacing_m: {spacing_m:g} m gives {nx * ny} cells over the area, more than {MAX_CELLS}")
        return cls(e0 + spacing_m / 2, n0 + spacing_m / 2, float(spacing_m), nx, ny, coarse_factor)

    @property
    def n_cells(self) -> int:
        """Number of cells, nx·ny."""
        return self.nx * self.ny

    @property
    def cell_area_km2(self) -> float:
        """Area of one cell, km²."""
        return (self.spacing_m / 1e3) ** 2

    def centres(self, cells: np.ndarray | None = None) -> np.ndarray:
        """float64 [n, 2] east/north of the given cell indices (default: every cell)."""
        c = np.arange(self.n_cells) if cells is None else np.asarray(cells)
        return np.stack(
            [self.east0_m + (c % self.nx) * self.spacing_m, self.north0_m + (c // self.nx) * self.spacing_m], axis=-1
        )

    def cell_of(self, points_m: np.ndarray) -> np.ndarray:
        """int64 [n]: the cell holding each point [n, 2], or -1 outside the grid."""
        p = np.asarray(points_m, float)
        i = np.floor((p[:, 0] - self.east0_m) / self.spacing_m + 0.5).astype(np.int64)
        j = np.floor((p[:, 1] - self.north0_m) / self.spacing_m + 0.5).astype(np.int64)
        inside = (i >= 0) & (i < self.nx) & (j >= 0) & (j < self.ny)
        return np.where(inside, j * self.nx + i, -1)

    def block_shape(self) -> tuple[int, int]:
        """(rows, columns) of blocks: the grid divided by coarse_factor, a partial block at each far edge."""
        f = self.coarse_factor
        return -(-self.ny // f), -(-self.nx // f)

    def block_representatives(self) -> np.ndarray:
        """int64 [n_blocks]: the cell nearest each block's centre (row-major over blocks)."""
        f = self.coarse_factor
        nby, nbx = self.block_shape()
        j = np.minimum(np.arange(nby) * f + f // 2, self.ny - 1)
        i = np.minimum(np.arange(nbx) * f + f // 2, self.nx - 1)
        return (j[:, None] * self.nx + i[None, :]).ravel()

    def within_cell_sd_db(self, values_db: np.ndarray) -> np.ndarray:
        """Standard deviation [cells, R] of a field across each cell, for values_db [cells, R] at the cell centres:
        the field taken linear within a cell along its local gradient (central differences), uniform over the cell."""
        # typed as any ndarray: numpy's stubs make np.gradient of a 3-d array three arrays even for one axis
        v: np.ndarray = np.asarray(values_db, np.float64).reshape(self.ny, self.nx, -1)
        gy, gx = (np.gradient(v, axis=a) if v.shape[a] > 1 else np.zeros_like(v) for a in (0, 1))
        return (np.sqrt(gx**2 + gy**2) / np.sqrt(12.0)).reshape(self.n_cells, -1)
