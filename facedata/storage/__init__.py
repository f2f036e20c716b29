"""Sharded, checksummed sample storage: one writer/reader API over LMDB and Parquet backends."""

from facedata.storage import lmdb_store, parquet_store  # noqa: F401  (register the backends)
from facedata.storage.base import BACKENDS
from facedata.storage.reader import ShardedDataset
from facedata.storage.verify import verify_dataset
from facedata.storage.writer import DatasetWriter

__all__ = ["BACKENDS", "DatasetWriter", "ShardedDataset", "verify_dataset"]
