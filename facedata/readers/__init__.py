"""Readers over shard directories: the shared order (readers/order.py), pixel layout options
(readers/pixels.py) and the PyTorch and MindSpore adapters.

The frameworks are imported only inside `facedata.readers.torch` / `facedata.readers.mindspore`, so
importing this package needs neither.
"""

from facedata.readers.order import ReadOrder, epoch_order, mix_counts, num_batches, parse_batch_mix, rank_size

__all__ = ["ReadOrder", "epoch_order", "mix_counts", "num_batches", "parse_batch_mix", "rank_size"]
