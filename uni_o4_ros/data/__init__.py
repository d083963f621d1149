"""Datasets: D4RL-layout HDF5 read/write/validation and normalised scores."""

from .d4rl import (
    DatasetError,
    OfflineDataset,
    describe_dims,
    finite_transition,
    from_arrays,
    read_hdf5,
    read_metadata,
    transition_dims,
    validate,
    write_hdf5,
)
from .score import REFERENCE_RETURNS, normalized_score, reference_returns, score_note

__all__ = ["DatasetError", "OfflineDataset", "describe_dims", "finite_transition", "from_arrays", "read_hdf5",
           "read_metadata", "transition_dims", "validate", "write_hdf5", "REFERENCE_RETURNS", "normalized_score",
           "reference_returns", "score_note"]
