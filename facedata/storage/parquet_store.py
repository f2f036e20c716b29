"""Parquet backend: one file per shard, one row group per read unit.

Columns: `image` as fixed_size_binary(H*W*C) (no offsets, so no 2 GiB limit, and the data buffer is a
zero-copy numpy view), then one typed column per record field (fixed_size_list for vector fields).
Row groups hold a whole number of blocks, ~16-48 MB uncompressed, and divide the shard exactly so a
global unit number maps to (shard, row group). No compression, no dictionary encoding, statistics only
on scalar record columns: raw crops barely compress, and this keeps writes and reads fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedata.errors import FacedataError
from facedata.storage.base import BACKENDS, Backend, ShardSchema
from facedata.storage.index import FORMAT_NAME, FORMAT_VERSION, canonical_json, dtype_to_json

_ROW_GROUP_BYTES = 48 << 20
_META_KEY = b"facedata"


def arrow_schema(schema: ShardSchema) -> pa.Schema:
    fields = [pa.field("image", pa.binary(schema.image_bytes), nullable=False)]
    for name in schema.record_dtype.names:
        base, shape = schema.record_dtype[name].base, schema.record_dtype[name].shape
        value_type = pa.from_numpy_dtype(base)
        if shape:
            fields.append(pa.field(name, pa.list_(value_type, int(np.prod(shape))), nullable=False))
        else:
            fields.append(pa.field(name, value_type, nullable=False))
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "image_shape": list(schema.image_shape),
        "record_dtype": dtype_to_json(schema.record_dtype),
    }
    return pa.schema(fields, metadata={_META_KEY: canonical_json(meta).encode()})


class ParquetSink:
    def __init__(self, target: Path, schema: ShardSchema) -> None:
        self.target = target
        self.schema = schema
        self.arrow_schema = arrow_schema(schema)
        scalars = [n for n in schema.record_dtype.names if not schema.record_dtype[n].shape]
        self.writer = pq.ParquetWriter(
            str(target), self.arrow_schema, compression="none", use_dictionary=False,
            write_statistics=scalars, data_page_size=1 << 20,
        )

    def write(self, pixels: np.ndarray, records: np.ndarray) -> None:
        n = len(records)
        image = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(self.schema.image_bytes), n, [None, pa.py_buffer(np.ascontiguousarray(pixels))]
        )
        columns = [image]
        for name in self.schema.record_dtype.names:
            values = np.ascontiguousarray(records[name])
            if values.ndim > 1:
                flat = pa.array(values.reshape(-1))
                columns.append(pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:]))))
            else:
                columns.append(pa.array(values))
        table = pa.Table.from_arrays(columns, schema=self.arrow_schema)
        self.writer.write_table(table, row_group_size=max(n, 1))

    def finish(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.close()
        if self.target.exists():
            self.target.unlink()


class ParquetSource:
    def __init__(self, path: Path, schema: ShardSchema, samples: int) -> None:
        self.path = path
        self.schema = schema
        try:
            self.file = pq.ParquetFile(str(path), memory_map=True)
        except (OSError, pa.ArrowException) as exc:
            raise FacedataError(f"{path.name}: cannot open Parquet shard ({exc})") from None

    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        if unit >= self.file.num_row_groups:
            raise FacedataError(f"{self.path.name}: row group {unit} is missing")
        table = self.file.read_row_group(unit)
        return self._decode(table)

    def _decode(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        n = table.num_rows
        image = table.column("image").combine_chunks()
        data = image.buffers()[1]
        size = self.schema.image_bytes
        pixels = np.frombuffer(data, np.uint8, n * size, image.offset * size)
        records = np.empty(n, self.schema.record_dtype)
        for name in self.schema.record_dtype.names:
            column = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(column.type):
                records[name] = column.flatten().to_numpy().reshape(records[name].shape)
            else:
                records[name] = column.to_numpy()
        return pixels.reshape((n, *self.schema.image_shape)), records

    def labels(self) -> np.ndarray:
        return self.file.read(columns=["label"]).column("label").to_numpy()

    def close(self) -> None:
        self.file.close()


@BACKENDS.register("parquet")
class ParquetBackend(Backend):
    name = "parquet"
    suffix = "parquet"
    cache_bytes = 96 << 20

    def unit_samples(self, samples_per_shard: int, block_samples: int, bytes_per_sample: int) -> int:
        """The largest whole number of blocks that divides the shard and stays under ~48 MB."""
        blocks = samples_per_shard // block_samples
        limit = max(1, _ROW_GROUP_BYTES // (block_samples * bytes_per_sample))
        best = max(k for k in range(1, min(blocks, limit) + 1) if blocks % k == 0)
        return best * block_samples

    def open_sink(self, target: Path, schema: ShardSchema) -> ParquetSink:
        return ParquetSink(target, schema)

    def open_source(self, path: Path, schema: ShardSchema, samples: int) -> ParquetSource:
        return ParquetSource(path, schema, samples)
