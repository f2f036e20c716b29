"""The build's plan file: appends, durable saves, recovery only of what the saved table covers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facedata.buildplan import RECORDS_NAME, PlanFile, read_records
from facedata.buildworker import plan_dtype
from facedata.samples import SAMPLE_DTYPE


def _chunk(lo: int, hi: int, per_image: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros(hi - lo, plan_dtype(9))
    rows["status"], rows["records"] = 1, per_image
    records = np.zeros((hi - lo) * per_image, SAMPLE_DTYPE)
    records["image_index"] = np.repeat(np.arange(lo, hi), per_image)
    return rows, records


def test_plan_resumes_at_the_last_save_and_drops_unsaved_records(tmp_path: Path) -> None:
    plan = PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 10, save_seconds=3600)
    plan.append(0, 4, *_chunk(0, 4, 3))
    plan.save()
    plan.append(4, 6, *_chunk(4, 6, 3))  # written but never saved: a crash loses it
    plan._file.flush()
    assert (tmp_path / RECORDS_NAME).stat().st_size == 18 * SAMPLE_DTYPE.itemsize

    again = PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 10)
    assert again.planned == 4 and again.records == 12 and not again.complete
    assert (tmp_path / RECORDS_NAME).stat().st_size == 12 * SAMPLE_DTYPE.itemsize  # truncated to the table
    again.append(4, 10, *_chunk(4, 10, 2))
    again.close()
    offsets = again.offsets()
    assert offsets[-1] == 24 and again.complete
    records = read_records(tmp_path / RECORDS_NAME, SAMPLE_DTYPE, int(offsets[5]), int(offsets[7]))
    np.testing.assert_array_equal(records["image_index"], [5, 5, 6, 6])


def test_plan_of_other_inputs_or_with_missing_records_starts_over(tmp_path: Path) -> None:
    plan = PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 5)
    plan.append(0, 5, *_chunk(0, 5, 2))
    plan.close()
    assert PlanFile(tmp_path, "other", plan_dtype(9), SAMPLE_DTYPE, 5).planned == 0
    plan = PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 5)
    plan.append(0, 5, *_chunk(0, 5, 2))
    plan.close()
    assert PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 6).planned == 0  # another corpus size
    with open(tmp_path / RECORDS_NAME, "r+b") as fh:  # records lost behind the table's back
        fh.truncate(3 * SAMPLE_DTYPE.itemsize)
    assert PlanFile(tmp_path, "fp", plan_dtype(9), SAMPLE_DTYPE, 5).planned == 0
    plan.remove()
    assert not any(tmp_path.iterdir())
