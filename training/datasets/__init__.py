"""Dataset readers (CASME-II, SAMM, MMEW, synthetic), class schemes and clip frame loading.

``load_dataset(name, root, scheme=...)`` is the one entry point the trainer uses; each reader returns a
:class:`~training.datasets.base.DatasetIndex` with usable samples and counts of what was skipped/dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training.datasets.base import DatasetError, DatasetIndex, Sample, Skipped
from training.datasets.casme2 import read_casme2
from training.datasets.classes import SCHEMES, ClassScheme, SchemeError, get_scheme, normalize_emotion
from training.datasets.mmew import read_mmew
from training.datasets.samm import read_samm
from training.datasets.synth_reader import read_synth

__all__ = [
    "READERS",
    "SCHEMES",
    "ClassScheme",
    "DatasetError",
    "DatasetIndex",
    "Sample",
    "SchemeError",
    "Skipped",
    "get_scheme",
    "load_dataset",
    "normalize_emotion",
    "read_casme2",
    "read_mmew",
    "read_samm",
    "read_synth",
]

READERS: dict[str, Callable[..., DatasetIndex]] = {
    "casme2": read_casme2,
    "samm": read_samm,
    "mmew": read_mmew,
    "synth": read_synth,
}


def load_dataset(name: str, root: str | Path, *, scheme: str | ClassScheme | None = None, **options: Any) -> DatasetIndex:
    """Read dataset ``name`` (one of :data:`READERS`) from ``root`` with the class ``scheme`` applied."""
    try:
        reader = READERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {sorted(READERS)}") from None
    return reader(root, scheme=scheme, **options)
