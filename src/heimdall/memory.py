"""The memory budget: how much memory a command may give to what an untrusted file declares before reading it.

A file's header says how large its arrays are (an HDF5 store's datasets, a model's radio map and the tables it
needs); a few bytes of header can declare terabytes. Whoever allocates what a file declares checks the size against
this budget first and refuses with an error naming the file, the field and both sizes. The budget is
`HEIMDALL_MEMORY_BUDGET_MB` when set, else half the memory this process may use (the machine's, or its
container's cgroup limit when lower).
"""

from __future__ import annotations

import os
from pathlib import Path

from heimdall.errors import ConfigError

MEMORY_BUDGET_ENV = "HEIMDALL_MEMORY_BUDGET_MB"
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
MIB = 1024**2


def memory_budget_bytes() -> int:
    """The budget in bytes (module docstring); ConfigError for a HEIMDALL_MEMORY_BUDGET_MB that is not a positive
    number."""
    text = os.environ.get(MEMORY_BUDGET_ENV, "").strip()
    if text:
        try:
            mib = float(text)
        except ValueError:
            mib = 0.0
        if not 0 < mib < float("inf"):
            raise ConfigError(f"{MEMORY_BUDGET_ENV}={text[:40]!r}: expected a positive number of MiB")
        return int(mib * MIB)
    return _usable_memory_bytes() // 2


def _usable_memory_bytes() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            limit = path.read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def over_budget(n_bytes: int) -> str | None:
    """Why `n_bytes` may not be allocated (their size and the budget, in MiB), or None when they fit the budget."""
    budget = memory_budget_bytes()
    if n_bytes <= budget:
        return None
    return f"{n_bytes / MIB:,.0f} MiB, more than the memory budget of {budget / MIB:,.0f} MiB ({MEMORY_BUDGET_ENV})"
