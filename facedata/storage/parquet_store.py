"""Parquet backend: one file per shard, one row group per read unit.

Columns: `image` as fixed_size_binary(H*W*C) (no offsets, so no 2 GiB limit), then one typed column
per record field (fixed_size_list for vector fields). Row groups hold a whole number of blocks, ~16-48
MB uncompressed, and divide the shard exactly so a global unit number maps to (shard, row group). No
compression, no dictionary encoding, statistics only on scalar record columns, one data page per column
chunk: raw crops barely compress, and so every column chunk is its PLAIN values behind one page header.
The reader exploits that: it parses the page headers itself and takes the values straight from the
memory-mapped file (the image column zero-copy), instead of pyarrow's decode of every row group. Any
other valid layout of the same schema (compressed or dictionary pages, BOOLEAN fields, files rewritten
by other tools) is read through pyarrow instead, row group by row group. With encoded images
(`image_encoding` png/jpeg) `image` is a `binary` column of one PNG/JPEG per row, read through pyarrow and
decoded (facedata.storage.codec).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facedata.errors import FacedataError
from facedata.storage.base import (
    BACKENDS,
    Backend,
    Piece,
    ShardSchema,
    in_page_cache,
    pinned_path,
    read_into_page_cache,
)
from facedata.storage.codec import RAW, decode_images, encode_images
from facedata.storage.index import FORMAT_NAME, FORMAT_VERSION, canonical_json, dtype_to_json

_ROW_GROUP_BYTES = 48 << 20
_INTERLEAVE_ROWS = 4096
_META_KEY = b"facedata"
# Parquet format constants (parquet.thrift): page types, encodings, physical types we read raw.
_DATA_PAGE, _DATA_PAGE_V2 = 0, 3
_PLAIN, _RLE = 0, 3
_PHYSICAL = {"INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "FLOAT": np.dtype("<f4"),
             "DOUBLE": np.dtype("<f8"), "FIXED_LEN_BYTE_ARRAY": np.dtype(np.uint8)}


def arrow_schema(schema: ShardSchema) -> pa.Schema:
    image_type = pa.binary(schema.image_bytes) if schema.encoding == RAW else pa.binary()
    fields = [pa.field("image", image_type, nullable=False)]
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
        "image_encoding": schema.encoding,
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
            write_statistics=scalars, data_page_size=max(1 << 20, schema.unit_samples * schema.image_bytes),
        )

    def write(self, pixels: np.ndarray, records: np.ndarray) -> None:
        n = len(records)
        if self.schema.encoding == RAW:
            image = pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(self.schema.image_bytes), n, [None, pa.py_buffer(np.ascontiguousarray(pixels))]
            )
        else:
            image = pa.array(encode_images(pixels, self.schema.encoding), pa.binary())
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
        """Drop the shard in progress; closing may fail again on a full disk, the temp file goes anyway."""
        try:
            self.writer.close()
        finally:
            self.target.unlink(missing_ok=True)


@dataclass(frozen=True)
class _ColumnLayout:
    """How one leaf column is stored: numpy dtype of its values, bytes per value, max levels."""

    dtype: np.dtype
    width: int
    max_repetition: int
    max_definition: int


class ParquetSource:
    def __init__(self, path: Path, schema: ShardSchema, samples: int, fd: int | None = None) -> None:
        self.path = path
        self.schema = schema
        try:
            self.file = pq.ParquetFile(pinned_path(path, fd), memory_map=True)
            self.fd = os.open(pinned_path(path, fd), os.O_RDONLY)
            self.map = mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise FacedataError(f"{path}: cannot open Parquet shard ({exc})") from None
        self.columns = [_layout(self.file.schema.column(i)) for i in range(len(self.file.schema))]
        try:
            _check_columns(path, self.file.schema_arrow, arrow_schema(schema))
        except FacedataError:
            self.close()
            raise
        self._arrow_lock = threading.Lock()  # pyarrow reads of one ParquetFile from two threads are not safe
        rows = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self._group_starts = np.cumsum([0, *rows])
        # Row groups of other sizes (a file rewritten by another tool) are read as row ranges through pyarrow.
        self._aligned = all(r == schema.unit_samples for r in rows[:-1])
        self._spans = [_span(self.file.metadata.row_group(i)) for i in range(self.file.num_row_groups)]

    def read_unit(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._aligned or self.schema.encoding != RAW:
            return self._read_unit_arrow(unit)
        if unit >= self.file.num_row_groups:
            raise FacedataError(f"{self.path.name}: row group {unit} is missing")
        row_group = self.file.metadata.row_group(unit)
        n = row_group.num_rows
        try:
            pixels = self._values(row_group, 0, n * self.schema.image_bytes)
            records = np.empty(n, self.schema.record_dtype)
            fields = [records[name] for name in self.schema.record_dtype.names]
            columns = [self._values(row_group, i, f.size).reshape(f.shape) for i, f in enumerate(fields, start=1)]
            _interleave(fields, columns)
        except (IndexError, KeyError, TypeError, ValueError, RecursionError):
            return self._read_unit_arrow(unit)  # a layout the raw path does not know (or a damaged one)
        return pixels.reshape((n, *self.schema.image_shape)), records

    def _read_unit_arrow(self, unit: int) -> tuple[np.ndarray, np.ndarray]:
        """Unit `unit` decoded by pyarrow: slower, but any valid encoding of the schema and any row groups."""
        rows = int(self._group_starts[-1])
        lo = unit * self.schema.unit_samples
        hi = min(lo + self.schema.unit_samples, rows)
        if lo >= hi:
            raise FacedataError(f"{self.path}: unit {unit} starts at row {lo}, past the file's {rows} rows")
        first = int(np.searchsorted(self._group_starts, lo, side="right")) - 1
        last = int(np.searchsorted(self._group_starts, hi, side="left")) - 1
        try:
            with self._arrow_lock:
                table = self.file.read_row_groups(list(range(first, last + 1)))
            table = table.slice(lo - int(self._group_starts[first]), hi - lo)
            records = np.empty(table.num_rows, self.schema.record_dtype)
            if any(column.null_count for column in table.columns):
                raise ValueError("null values in a facedata column")
            for name in self.schema.record_dtype.names:
                column = table.column(name).combine_chunks()
                values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
                records[name] = values.to_numpy(zero_copy_only=False).reshape(records[name].shape)
            image = table.column("image").combine_chunks()
            if self.schema.encoding != RAW:
                return self._decode(image, f"{self.path.name}: rows {lo}..{hi - 1}"), records
            pixels = np.frombuffer(image.buffers()[1], np.uint8, table.num_rows * self.schema.image_bytes,
                                   image.offset * self.schema.image_bytes)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise FacedataError(f"{self.path}: rows {lo}..{hi - 1} (unit {unit}) are unreadable ({exc})") from None
        return pixels.reshape((table.num_rows, *self.schema.image_shape)), records

    def _decode(self, image: pa.BinaryArray, where: str) -> np.ndarray:
        """A binary column's images decoded (its value bytes and int32 offsets, read without copies)."""
        _, offsets, data = image.buffers()
        offsets = np.frombuffer(offsets, "<i4", len(image) + 1, image.offset * 4)
        blob = np.frombuffer(data, np.uint8, int(offsets[-1]))
        return decode_images(blob[int(offsets[0]):], offsets[1:] - offsets[0], self.schema.image_shape, where)

    def _values(self, row_group: pq.RowGroupMetaData, i: int, count: int) -> np.ndarray:
        """Column i's `count` values: a view of the file when it has one data page, else the pages joined."""
        chunk, layout = row_group.column(i), self.columns[i]
        if chunk.compression != "UNCOMPRESSED" or chunk.dictionary_page_offset is not None or layout is None:
            raise ValueError(f"column {chunk.path_in_schema} is {chunk.compression} {chunk.physical_type}")
        pos, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
        pages = []
        while pos < end:
            header, pos = _thrift_struct(self.map, pos)
            if not 0 <= header[3] <= end - pos:
                raise ValueError(f"column {chunk.path_in_schema}: a page runs past its column chunk")
            pages.append(self._page_values(header, pos, layout))
            pos += header[3]
        values = pages[0] if len(pages) == 1 else np.concatenate(pages)
        if len(values) != count:
            raise ValueError(f"column {chunk.path_in_schema}: {len(values)} values, expected {count}")
        return values

    def _page_values(self, header: dict[int, Any], pos: int, layout: _ColumnLayout) -> np.ndarray:
        """A data page's PLAIN values, after its level streams; a size mismatch means nulls or other encodings."""
        if header[1] == _DATA_PAGE:
            page = header[5]
            encoding, skip = page[2], 0
            for max_level, level_encoding in ((layout.max_repetition, page[4]), (layout.max_definition, page[3])):
                if not max_level:
                    continue
                if level_encoding != _RLE:
                    raise ValueError(f"level encoding {level_encoding}")
                skip += 4 + int.from_bytes(self.map[pos + skip : pos + skip + 4], "little")  # length-prefixed
        elif header[1] == _DATA_PAGE_V2:
            page = header[8]
            encoding, skip = page[4], page[5] + page[6]
        else:
            raise ValueError(f"page type {header[1]}")
        size = header[3] - skip
        if encoding != _PLAIN or size < 0 or size != page[1] * layout.width:
            raise ValueError(f"page of {page[1]} values: encoding {encoding}, {size} value bytes")
        return np.frombuffer(self.map, layout.dtype, size // layout.dtype.itemsize, pos + skip)

    def will_need(self, unit: int) -> Callable[[], None] | None:
        """Read the row groups holding `unit` into the page cache: the image column is gathered straight
        from the map, so a cold one would fault in page by page as the batches happen to touch it. A row
        group is tens of MB in one piece: read front to back it comes at the disk's sequential speed,
        faster than posix_fadvise(WILLNEED) fills the cache page by page (measured)."""
        lo = unit * self.schema.unit_samples
        groups = np.searchsorted(self._group_starts, [lo, lo + self.schema.unit_samples - 1], side="right") - 1
        spans = [(start, stop - start) for start, stop in self._spans[int(groups[0]) : int(groups[1]) + 1]
                 if not in_page_cache(self.fd, start, stop - start)]
        return partial(_read_spans, self.fd, spans) if spans else None

    def labels(self) -> np.ndarray:
        return self.file.read(columns=["label"]).column("label").to_numpy()

    def close(self) -> None:
        """The map itself closes once no unit array views it any more."""
        self.file.close()
        os.close(self.fd)


def _read_spans(fd: int, spans: list[tuple[int, int]]) -> None:
    for offset, length in spans:
        read_into_page_cache(fd, offset, length)


def _span(row_group: pq.RowGroupMetaData) -> tuple[int, int]:
    """The file bytes [start, stop) of a row group's column chunks (dictionary pages included)."""
    chunks = [row_group.column(i) for i in range(row_group.num_columns)]
    starts = [c.data_page_offset if c.dictionary_page_offset is None else min(c.data_page_offset,
              c.dictionary_page_offset) for c in chunks]
    return min(starts), max(s + c.total_compressed_size for s, c in zip(starts, chunks, strict=True))


def _check_columns(path: Path, got: pa.Schema, expected: pa.Schema) -> None:
    """The file's columns must be the index's: same names, order, types and non-nullability."""
    for k in range(max(len(got), len(expected))):
        have = _describe(got.field(k)) if k < len(got) else "absent"
        want = _describe(expected.field(k)) if k < len(expected) else "absent"
        if have != want:
            raise FacedataError(f"{path}: Parquet column {k} is {have}, the index's schema needs {want}")


def _describe(field: pa.Field) -> str:
    """Name, type and nullability; a list's element field name is left out (writers call it item or element)."""
    kind = field.type
    if pa.types.is_fixed_size_list(kind):
        kind = f"fixed_size_list<{kind.value_type}>[{kind.list_size}]"
    return f"{field.name}: {kind}{'' if field.nullable else ' not null'}"


def _interleave(fields: list[np.ndarray], columns: list[np.ndarray]) -> None:
    """Copy each column into its record field, a few thousand rows at a time: every field writes into
    the same rows while they are in the L2 cache (field by field over the whole unit, each pass would
    re-read every 88-byte row from memory; about 2x slower)."""
    for lo in range(0, len(fields[0]), _INTERLEAVE_ROWS):
        for field, column in zip(fields, columns, strict=True):
            field[lo : lo + _INTERLEAVE_ROWS] = column[lo : lo + _INTERLEAVE_ROWS]


def _layout(column: pq.ColumnSchema) -> _ColumnLayout | None:
    """The raw layout of a leaf column, or None for physical types not read raw (BOOLEAN, BYTE_ARRAY)."""
    dtype = _PHYSICAL.get(column.physical_type)
    if dtype is None:
        return None
    width = column.length if column.physical_type == "FIXED_LEN_BYTE_ARRAY" else dtype.itemsize
    return _ColumnLayout(dtype, width, column.max_repetition_level, column.max_definition_level)


# Thrift compact protocol, just enough to read a page header (a struct of ints and nested structs).
def _varint(buf: mmap.mmap, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _zigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _thrift_struct(buf: mmap.mmap, pos: int) -> tuple[dict[int, Any], int]:
    """Field id -> value of the struct at `pos`, and the position after it."""
    fields: dict[int, Any] = {}
    field_id = 0
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        delta, kind = head >> 4, head & 0x0F
        if delta:
            field_id += delta
        else:
            raw, pos = _varint(buf, pos)
            field_id = _zigzag(raw)
        fields[field_id], pos = _thrift_value(buf, pos, kind, in_list=False)


def _thrift_value(buf: mmap.mmap, pos: int, kind: int, *, in_list: bool) -> tuple[Any, int]:
    if kind in (1, 2):  # booleans: the type itself in a struct field, one byte in a list
        return (buf[pos] == 1, pos + 1) if in_list else (kind == 1, pos)
    if kind == 3:
        return buf[pos], pos + 1
    if kind in (4, 5, 6):
        raw, pos = _varint(buf, pos)
        return _zigzag(raw), pos
    if kind == 7:
        return buf[pos : pos + 8], pos + 8
    if kind == 8:
        size, pos = _varint(buf, pos)
        return buf[pos : pos + size], pos + size
    if kind in (9, 10):
        head = buf[pos]
        count, element = head >> 4, head & 0x0F
        pos += 1
        if count == 15:
            count, pos = _varint(buf, pos)
        items = []
        for _ in range(count):
            item, pos = _thrift_value(buf, pos, element, in_list=True)
            items.append(item)
        return items, pos
    if kind == 12:
        return _thrift_struct(buf, pos)
    raise ValueError(f"thrift type {kind}")


@BACKENDS.register("parquet")
class ParquetBackend(Backend):
    name = "parquet"
    suffix = "parquet"
    cache_bytes = 96 << 20
    prefetch_units = True  # read_unit only reads the map and the footer metadata: safe in a helper thread

    def unit_samples(self, samples_per_shard: int, block_samples: int, bytes_per_sample: int) -> int:
        """The largest whole number of blocks that divides the shard and stays under ~48 MB."""
        blocks = samples_per_shard // block_samples
        limit = max(1, _ROW_GROUP_BYTES // (block_samples * bytes_per_sample))
        best = max(k for k in range(1, min(blocks, limit) + 1) if blocks % k == 0)
        return best * block_samples

    def open_sink(self, target: Path, schema: ShardSchema) -> ParquetSink:
        return ParquetSink(target, schema)

    def open_source(self, path: Path, schema: ShardSchema, samples: int, fd: int | None = None) -> ParquetSource:
        return ParquetSource(path, schema, samples, fd)

    def pieces(self, path: Path, schema: ShardSchema, samples: int) -> list[Piece]:
        """One piece per row group, from the footer."""
        meta = pq.read_metadata(path)
        pieces, first = [], 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            start, stop = _span(group)
            pieces.append(Piece(f"row group {g}", first, group.num_rows, start, stop - start))
            first += group.num_rows
        return pieces
