"""The demo corpus ingested into manifests, as the build tests use it."""

from __future__ import annotations

from pathlib import Path

from facedata.demo import build_demo_corpus
from facedata.manifest import Manifest
from facedata.parsers import ingest


def demo_manifests(root: Path, seed: int, wider_images: int = 24, small: int = 10, cuhk_images: int = 16) -> dict:
    """det.parquet and lmk.parquet in `root`, and det_small.parquet with the first `small` detection images
    (mining with a random-weight PNet gives thousands of detections per image: a few images are plenty)."""
    corpus = build_demo_corpus(root / "corpus", seed=seed, wider_images=wider_images, cuhk_images=cuhk_images)
    det, rejects = ingest(corpus.wider_annotations, images=corpus.wider_images)
    lmk, rejects2 = ingest(corpus.cuhk_annotations, images=corpus.cuhk_images)
    assert len(rejects) == 0 and len(rejects2) == 0
    det.write(root / "det.parquet")
    lmk.write(root / "lmk.parquet")
    ids = det.images["image_id"][:small]
    first = Manifest(det.images[:small].reset_index(drop=True),
                     det.faces[det.faces["image_id"].isin(ids)].reset_index(drop=True), det.provenance)
    first.write(root / "det_small.parquet")
    return {"root": root, "corpus": corpus, "det": det, "lmk": lmk, "small": first,
            "inputs": ["--detections", str(root / "det.parquet"), "--landmarks", str(root / "lmk.parquet")]}
