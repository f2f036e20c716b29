"""What workers run when they write the shards themselves (the Dask engines): pieces of a shard, then the shard.

`render_piece` tasks render runs of the stream images whose kept samples fall in one shard's sample range, as
render_chunk does (same mix, same decoding, same crops), keeping the samples within the range; a
`write_shard` task takes the shard's pieces (Dask moves them from worker to worker, never through the build
process) and writes them through the ShardBuilder the build process's own writer uses, so the file is the
one the local engine writes. It names the file with a temp name; the build process lists and renames it
(facedata.shardedrender). Where the samples lie comes from the plan: an image that fails to decode now
shifts every later sample, so the shard is then not written, the failure is reported, and the build
process places the shards again.

Imported by workers only when they run a shard task: the storage backends stay out of the worker server.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from facedata.buildworker import WRITTEN, ChunkResult, Samples, current_job, mixed_records, render_images
from facedata.errors import FacedataError
from facedata.samplers.mixing import MixPlan
from facedata.storage.base import BACKENDS, ShardSchema
from facedata.storage.index import shard_file_name
from facedata.storage.writer import ShardBuilder


@dataclass(frozen=True)
class ShardJob:
    """Shard `shard` = stream samples [begin, end); stream images [lo, hi) hold them (a piece: some of those)."""

    shard: int
    lo: int
    hi: int
    plan: np.ndarray  # the images' plan table rows (images known to fail carry their failure status)
    expected: np.ndarray  # their rows of the progress table as placed: status and samples per label
    first_record: int  # image lo's first record in the plan file
    first_sample: int  # image lo's first sample in the stream
    begin: int
    end: int

    def pieces(self, images: int) -> list[ShardJob]:
        """The job cut into runs of `images` images, rendered by separate tasks."""
        records = np.concatenate([[0], np.cumsum(self.plan["records"])])
        samples = np.concatenate([[0], np.cumsum(self.expected["counts"].sum(axis=1))])
        return [
            replace(self, lo=self.lo + a, hi=self.lo + b, plan=self.plan[a:b], expected=self.expected[a:b],
                    first_record=self.first_record + int(records[a]), first_sample=self.first_sample + int(samples[a]))
            for a, b in ((a, min(a + images, len(self.plan))) for a in range(0, len(self.plan), images))
        ]


@dataclass
class ShardResult:
    shard: int
    lo: int  # the first image rendered
    progress: np.ndarray  # the progress rows of images [lo, lo + len(progress)) as rendered
    notes: dict[int, str] = field(default_factory=dict)  # stream image -> detail of a failure
    entry: dict | None = None  # the shard's index entry; None when an image failed against the plan
    temp: str | None = None  # the file holding it, in the output directory
    units: int = 0  # units (blocks, row groups) written


def render_piece(shard: int, spec: ShardJob, mix: MixPlan | None) -> ChunkResult:
    """Render a piece of shard `shard` (`spec`): its images' progress, and their samples within the shard's
    range, kept in memory until the shard's writer takes them (Dask moves them there, worker to worker)."""
    at = spec.first_sample  # the stream position of the next image's first sample

    def in_shard(n: int) -> slice:
        nonlocal at
        part = slice(max(0, spec.begin - at), max(0, min(n, spec.end - at)))
        at += n
        return part

    samples = Samples(current_job(), spec.lo, spec.hi, keep=in_shard)
    render_images(samples, mixed_records(spec.lo, spec.hi, spec.plan, spec.first_record, mix), spec.plan)
    return samples.result()


def write_shard(shard: int, spec: ShardJob, out_dir: str, layout: dict, pieces: list[ChunkResult]) -> ShardResult:
    """Write shard `shard` from its rendered pieces into `out_dir` under a temp name; nothing if an image
    failed to decode (the samples after it lie elsewhere: the build process places them again)."""
    progress = np.concatenate([piece.progress for piece in pieces])
    result = ShardResult(shard, spec.lo, progress, {j: note for piece in pieces for j, note in piece.notes.items()})
    if not np.array_equal(progress["status"], spec.expected["status"]):
        return result
    backend = BACKENDS.get(layout["backend"])()
    schema = ShardSchema.from_index(layout)
    name = shard_file_name(shard, backend.suffix)
    temp = Path(out_dir) / f".{name}.tmp-{secrets.randbits(62)}"  # unique among workers of any host
    builder = ShardBuilder(backend, schema, temp)
    try:
        _check_counts(spec, progress, sum(len(piece.records) for piece in pieces))
        for piece in pieces:
            builder.add(piece.pixels, piece.records)
        result.entry = builder.finish(name, spec.begin)
    except BaseException:
        builder.abort()
        raise
    result.temp, result.units = temp.name, builder.units
    return result


def _check_counts(spec: ShardJob, progress: np.ndarray, held: int) -> None:
    """The images gave what the plan said, and fill the shard: else the bytes would be wrong."""
    differ = np.flatnonzero((progress["counts"] != spec.expected["counts"]).any(axis=1)
                            & (progress["status"] == WRITTEN))
    if len(differ) or held != spec.end - spec.begin:
        j = spec.lo + int(differ[0]) if len(differ) else None
        raise FacedataError(f"shard {spec.shard}: the samples rendered differ from the plan "
                            f"(image {j}, {held} of {spec.end - spec.begin} samples)")
