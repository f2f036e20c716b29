"""Build stages are plug-ins: a stage registered in facedata.stages.STAGES builds with no change to the
orchestration, which names no stage."""

from __future__ import annotations

import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import facedata
import facedata.stages
from facedata.build import build_dataset, format_summary
from facedata.demo import build_demo_corpus
from facedata.errors import FacedataError
from facedata.parsers import ingest
from facedata.samplers.tasks import ImageTask
from facedata.samples import LABEL_POSITIVE, ORIGIN_DETECTIONS
from facedata.stages import STAGES, BuildConfig, Stage
from facedata.storage import ShardedDataset, verify_dataset

ORCHESTRATION = ["build.py", "buildrun.py", "buildworker.py", "buildsummary.py", "buildoutput.py", "buildplan.py",
                 "buildprovenance.py", "buildoptions.py", "workerpool.py"]


@dataclass(frozen=True)
class PositivesOnly(Stage):
    """A 16 px stage that keeps only the positives of the crop planner (what a new stage file would hold)."""

    def plan(self, task: ImageTask, config: BuildConfig, seed: int, image, model):
        records, counters = super().plan(task, config, seed, image, model)
        if task.origin == ORIGIN_DETECTIONS:
            records = records[records["label"] == LABEL_POSITIVE]
        return records, counters


def test_every_stage_module_registers_its_stage() -> None:
    modules = {m.name for m in pkgutil.iter_modules(facedata.stages.__path__)} - {"base", "mined"}
    assert modules <= set(STAGES.names()) and {"pnet", "rnet", "onet"} <= modules
    assert [STAGES.get(name).size for name in ("pnet", "rnet", "onet")] == [12, 24, 48]


def test_the_orchestration_names_no_stage() -> None:
    root = Path(facedata.__file__).parent
    for name in ORCHESTRATION:
        code = "\n".join(line for line in (root / name).read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        code = re.sub(r'"""(.|\n)*?"""', "", code)  # docstrings may tell the story
        found = re.findall(r'"(pnet|rnet|onet)"', code)
        assert found in ([], ["pnet"] if name == "build.py" else []), (name, found)  # build.py: the default


def test_a_new_stage_builds_without_touching_the_orchestration(tmp_path: Path) -> None:
    corpus = build_demo_corpus(tmp_path / "corpus", seed=2)
    det, _ = ingest(corpus.wider_annotations, images=corpus.wider_images)
    lmk, _ = ingest(corpus.cuhk_annotations, images=corpus.cuhk_images)
    if "positives16" not in STAGES:
        STAGES.register("positives16")(PositivesOnly("positives16", 16))
    summary = build_dataset(det, lmk, tmp_path / "out", stage="positives16", workers=1, mix=False, progress=False)
    data = ShardedDataset(tmp_path / "out")
    assert data.image_shape == (16, 16, 3) and verify_dataset(tmp_path / "out") == []
    records = data.read(np.arange(len(data)))[1]
    detections = records[records["origin"] == ORIGIN_DETECTIONS]
    assert len(detections) > 0 and (detections["label"] == LABEL_POSITIVE).all()
    assert summary["stage"] == "positives16" and "positives16 shards (16 px)" in format_summary(summary)
    with pytest.raises(FacedataError, match="unknown build stage 'nope'"):
        build_dataset(det, lmk, tmp_path / "x", stage="nope", progress=False)
