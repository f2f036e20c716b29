"""Readers over shard directories: the shared order function plus PyTorch and MindSpore adapters.

The frameworks are imported lazily inside `facedata.readers.torch` / `facedata.readers.mindspore`, so
importing this package needs neither.
"""

from facedata.readers.order import epoch_order, num_batches, rank_order, rank_size, worker_order

__all__ = ["epoch_order", "num_batches", "rank_order", "rank_size", "worker_order"]
