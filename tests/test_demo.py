"""The demo corpus is deterministic, in the real formats, and the demo pipeline reproduces what it wrote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from facedata.cli import main
from facedata.demo import DEMO_STEPS, MIN_SIZE, DemoContext, DemoStep, build_demo_corpus, run_demo
from facedata.manifest import Manifest


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoContext:
    return run_demo(tmp_path_factory.mktemp("demo"), seed=7, quiet=True)


def test_corpus_is_deterministic_in_the_seed(tmp_path: Path) -> None:
    a = build_demo_corpus(tmp_path / "a", seed=1)
    b = build_demo_corpus(tmp_path / "b", seed=1)
    c = build_demo_corpus(tmp_path / "c", seed=2)
    assert tree_digest(a.root) == tree_digest(b.root)
    digest_c = tree_digest(c.root)
    assert digest_c.keys() == tree_digest(a.root).keys() and digest_c != tree_digest(a.root)


def test_corpus_files_are_in_the_real_formats(demo: DemoContext) -> None:
    corpus = demo.corpus
    assert corpus is not None
    cuhk = corpus.cuhk_annotations.read_bytes()
    assert cuhk.count(b"\r\n") == corpus.cuhk_images_count and b"\\" in cuhk
    wider = corpus.wider_annotations.read_text().splitlines()
    # Both forms of a face-less image that occur in real releases.
    assert wider[1:3] == ["0", "0 0 0 0 0 0 0 0 0 0 "]
    assert wider[4:6] == ["1", "0 0 0 0 0 0 0 0 0 0 "]
    assert corpus.wider_zero_face_images == 2
    assert corpus.wider_small_faces >= 1 and corpus.wider_invalid_faces == 1
    for rel, (width, height) in corpus.sizes.items():
        base = corpus.cuhk_images if rel.startswith(("lfw_5590", "net_7876")) else corpus.wider_images
        img = cv2.imread(str(base / rel))
        assert img.shape[:2] == (height, width)


def test_ingest_counts_match_what_the_demo_wrote(demo: DemoContext) -> None:
    corpus = demo.corpus
    wider = Manifest.read(demo.manifests["wider"])
    assert len(wider.images) == corpus.wider_images_count
    assert len(wider.faces) == corpus.wider_faces
    assert int(wider.faces["invalid"].sum()) == corpus.wider_invalid_faces
    with_faces = wider.images["image_id"].isin(wider.faces["image_id"])
    assert int((~with_faces).sum()) == corpus.wider_zero_face_images
    probed = {r.rel_path: (r.width, r.height) for r in wider.images.itertuples()}
    assert probed == {k: v for k, v in corpus.sizes.items() if k in probed}

    detections = Manifest.read(demo.manifests["detections"])
    ignored = detections.faces["ignore"].to_numpy(bool)  # removed faces stay as ignore regions
    assert int((~ignored).sum()) == corpus.wider_faces - corpus.wider_small_faces
    assert int(ignored.sum()) == corpus.wider_small_faces
    assert len(detections.images) == corpus.wider_images_count
    assert detections.provenance["filters"][0]["steps"][0]["rule"] == f"min_size {MIN_SIZE}"


def test_landmarks_match_the_list_and_sit_on_drawn_features(demo: DemoContext) -> None:
    corpus = demo.corpus
    landmarks = Manifest.read(demo.manifests["landmarks"])
    assert len(landmarks.images) == len(landmarks.faces) == corpus.cuhk_images_count
    assert set(landmarks.faces["scheme"]) == {"mtcnn5"}
    written = {}
    for line in corpus.cuhk_annotations.read_text().splitlines():
        fields = line.split()
        written[fields[0].replace("\\", "/")] = (
            [float(v) for v in fields[1:5]],
            np.array(fields[5:], np.float32).reshape(5, 2),
        )
    faces = landmarks.faces.merge(landmarks.images[["image_id", "rel_path"]], on="image_id")
    for face in faces.itertuples():
        (x1, x2, y1, y2), points = written[face.rel_path]
        assert (face.x1, face.x2, face.y1, face.y2) == (x1, x2, y1, y2)
        np.testing.assert_allclose(np.asarray(face.points).reshape(5, 2), points, atol=1e-4)
        img = cv2.imread(str(corpus.cuhk_images / face.rel_path)).astype(np.int32)
        # Pupils are dark, the cheek below each eye is skin (red > green > blue).
        for ex, ey in points[:2]:
            assert img[int(round(ey)), int(round(ex))].sum() < 300
        cheek = img[
            int(round(points[2, 1])), int(round((points[0, 0] + points[3, 0]) / 2 - 0.05 * (x2 - x1)))
        ]
        assert cheek[2] > cheek[1] > cheek[0]
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]  # image-left point first


def test_stats_outputs(demo: DemoContext) -> None:
    data = json.loads(demo.outputs["stats_json"].read_text())
    assert data["detections"]["images"] == demo.corpus.wider_images_count
    assert data["landmarks"]["landmarks"]["schemes"]["mtcnn5"]["faces"] == demo.corpus.cuhk_images_count
    rows = data["detections"]["survival"]["rows"]
    assert all(r["faces"] == data["detections"]["faces"] for r in rows)  # sizes were probed
    md = demo.outputs["stats_markdown"].read_text()
    assert "Input-resolution survival" in md and "CUHK-style landmarks" in md
    summary = json.loads(demo.outputs["summary"].read_text())
    assert list(summary["steps"]) == [s.name for s in DEMO_STEPS]


def test_later_stages_can_append_a_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Path] = {}

    def extra(ctx: DemoContext) -> str:
        seen.update(ctx.manifests)
        return "extra ok"

    steps = [*DEMO_STEPS, DemoStep("extra step", extra)]
    ctx = run_demo(tmp_path, seed=0, steps=steps)
    assert {"detections", "landmarks"} <= set(seen) and all(p.is_file() for p in seen.values())
    out = capsys.readouterr().out
    assert f"[{len(steps)}/{len(steps)}] extra step" in out and "extra ok" in out
    assert ctx.results["extra step"] == "extra ok"


def test_demo_command_quiet(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "d"), "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert (tmp_path / "d" / "stats.md").is_file()
