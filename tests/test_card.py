"""`facedata card`: the data card of real manifests (WIDER val, filtered; WFLW + 300W-LP fused). Every number the
tests check is recomputed here with pandas straight from the Parquet file (not through facedata's Manifest)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import facedata
from facedata.card import CARDS_DIR, CORPUS_CARDS, corpus_card, write_card
from facedata.cli import main
from facedata.errors import FacedataError
from facedata.filters import apply_filters, rules_from_options
from facedata.fusion.fuse import fuse_files
from facedata.parsers import ingest

CORPUS_CARDS_DIR = Path(__file__).resolve().parent.parent / "data_cards"  # the top-level link to facedata/data_cards
WFLW98_CONTOUR = range(0, 33)  # wflw98 points 0-32 (data_cards/wflw.md)


@pytest.fixture(scope="module")
def wider(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WIDER val with the degenerate and invalid faces removed as ignore regions (so the card counts them apart)."""
    manifest, _ = ingest(realdata / "wider_face/wider_face_val_bbx_gt.txt")
    filtered, _ = apply_filters(manifest, rules_from_options(None, True, (), False, "ignore"))
    path = tmp_path_factory.mktemp("wider") / "wider val.parquet"
    filtered.write(path)
    return path


@pytest.fixture(scope="module")
def fused(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fused")
    wflw, _ = ingest(realdata / "wflw/WFLW_annotations/list_98pt_test/list_98pt_test_largepose.txt")
    lp, _ = ingest(realdata / "300w_lp")
    wflw.write(folder / "wflw.parquet")
    lp.write(folder / "300w_lp.parquet")
    fuse_files([folder / "wflw.parquet", folder / "300w_lp.parquet"], folder / "fused.parquet", "wflw98",
               weights=["yaw > 30 or yaw < -30=2"])
    return folder / "fused.parquet"


def card_of(manifest: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(main, ["card", str(manifest), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_text()


def table(card: str, header: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header line starts with `| header |`, by first cell."""
    lines = card.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def long_table(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, faces not flagged ignore) read with pandas from the one-row-per-face Parquet file."""
    frame = pd.read_parquet(path)
    images = frame.drop_duplicates("image_id")
    faces = frame[frame["face_id"].notna()]
    return images, faces[~faces["ignore"].astype(bool)]


def n(value: int) -> str:
    return f"{value:,}"


def test_wider_card_counts_sizes_and_attributes(tmp_path: Path, wider: Path) -> None:
    card = card_of(wider, tmp_path / "card.md")
    images, faces = long_table(wider)
    frame = pd.read_parquet(wider)
    ignored = int(frame["ignore"].fillna(False).astype(bool).sum())
    assert ignored == 585 + 7  # the invalid faces and the degenerate boxes
    assert f"{n(len(images))} images and {n(len(faces))} faces (+{ignored} ignore regions)" in card
    assert table(card, "split") == {"val": [n(len(images)), n(len(faces))]}
    assert table(card, "source")["wider_face"] == [n(len(images)), n(len(faces))]
    small = int((((faces["x2"] - faces["x1"]) < 10) | ((faces["y2"] - faces["y1"]) < 10)).sum())
    assert small > 10_000  # WIDER val is mostly small faces
    assert f"**Under 10 px:** {n(small)} of {n(len(faces))} faces ({100 * small / len(faces):.2f} %)" in card
    sizes = np.minimum(faces["x2"] - faces["x1"], faces["y2"] - faces["y1"])
    assert table(card, "shorter side px")["8-16"] == [n(int(((sizes >= 8) & (sizes < 16)).sum()))]
    clear = int((faces["blur"] == 0).sum())
    rows = [line for line in card.splitlines() if line.startswith("| blur | clear |")]
    assert rows == [f"| blur | clear | {n(clear)} | {100 * clear / len(faces):.2f} % |"]
    assert "Survival: image size unknown" in card  # ingested without --images: no resized rows, said so
    assert "No face has landmarks." in card


def test_wider_card_licence_provenance_and_quirks(tmp_path: Path, wider: Path) -> None:
    out = tmp_path / "cards" / "card.md"
    card = card_of(wider, out)
    link = re.search(r"\[WIDER FACE\]\(([^)]+)\)", card)
    assert link and (out.parent / link.group(1)).resolve() == (CORPUS_CARDS_DIR / "wider_face.md").resolve()
    assert "Research use only (the WIDER FACE terms" in card
    digest = hashlib.sha256(wider.read_bytes()).hexdigest()
    meta = json.loads(pq.read_schema(wider).metadata[b"facedata"])
    assert f"sha256 `{digest}`" in card and f"{wider.stat().st_size:,} bytes" in card
    assert f"schema version {meta['schema_version']}, written by facedata {meta['facedata_version']}" in card
    assert "format `wider_bbx_gt`" in card and "image root `wider_val`: not given (no --images)" in card
    assert "filter: `" in card and "drop_invalid: 592 faces removed" in card
    assert "- 1 face line(s) repeated identically in the source, kept once" in card
    emptied = len(pd.read_parquet(wider).drop_duplicates("image_id")) - long_table(wider)[1]["image_id"].nunique()
    assert f"- {emptied} images without faces (pure negatives)" in card
    assert "Attribute column order; Zero-face images; Degenerate boxes" in card


def test_fused_card_sources_schemes_pose(tmp_path: Path, fused: Path) -> None:
    card = card_of(fused, tmp_path / "fused.md")
    images, faces = long_table(fused)
    by_source = images.groupby("source").size()
    assert set(by_source.index) == {"wflw", "300w_lp"}
    for source, count in by_source.items():
        assert table(card, "source")[source][0] == n(int(count))
    assert "[WFLW (Wider Facial Landmarks in-the-Wild)](" in card and "[300W-LP (300W Large Pose" in card
    assert card.count("Non-commercial **research use only**") == 2
    scheme = table(card, "scheme")["wflw98"]
    visible = np.stack(faces["visible"].to_numpy())
    assert scheme == [n(len(faces)), "98", n(int((visible > 0).sum())), n(int((faces["box_source"] == "derived")
                                                                            .sum()))]
    contour = (visible[:, list(WFLW98_CONTOUR)] > 0).mean()
    assert f"contour {100 * contour:.2f} %" in card
    assert "0-32 1-31" in card and "96-97." in card  # the wflw98 flip pairs of data_cards/wflw.md
    yaw = faces["yaw"].astype(float)
    assert f">=60 {int((yaw >= 60).sum())}" in card.split("- `yaw`: ", 1)[1].splitlines()[0]
    estimated = int((faces["pose_source"] == "estimated").sum())
    assert f"estimated {estimated}" in card and estimated == len(faces) - 1  # 300W-LP's pose is annotated
    weighted = int((faces["weight"] != 1).sum())
    assert f"`--weight yaw > 30 or yaw < -30=2` multiplies the `weight` of {weighted} faces" in card
    assert "- input `" in card and "format `300w_lp`" in card and "format `wflw`" in card  # nested provenance


def test_every_parser_source_has_a_corpus_card() -> None:
    """A source corpus a parser tags images with links to its shipped card (with a licence and quirks)."""
    for source in CORPUS_CARDS:
        card = corpus_card(source)
        assert card is not None and card.path.parent == CORPUS_CARDS_DIR.resolve(), source
        assert card.licence != "not stated" and card.quirks, source
    assert corpus_card("my_own_corpus") is None


def test_cli_refuses_to_replace_a_card_quiet_and_help(tmp_path: Path, wider: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "card.md"
    out.write_text("my notes\n")
    refused = runner.invoke(main, ["card", str(wider), "-o", str(out)])
    assert refused.exit_code == 2 and "--overwrite" in refused.output and "Traceback" not in refused.output
    assert out.read_text() == "my notes\n"
    quiet = runner.invoke(main, ["card", str(wider), "-o", str(out), "--overwrite", "-q"])
    assert quiet.exit_code == 0 and quiet.output == "" and out.read_text().startswith("# Data card: wider val.parquet")
    same = runner.invoke(main, ["card", str(wider), "-o", str(wider), "--overwrite"])
    assert same.exit_code == 2 and "same file as the manifest" in same.output
    assert pd.read_parquet(wider).shape[0] > 0
    not_manifest = runner.invoke(main, ["card", str(out), "-o", str(tmp_path / "x.md")])
    assert not_manifest.exit_code == 2 and "not a readable facedata manifest" in not_manifest.output
    assert not (tmp_path / "x.md").exists() and [p.name for p in tmp_path.iterdir()] == ["card.md"]
    folder = runner.invoke(main, ["card", str(wider), "-o", str(tmp_path), "--overwrite"])
    assert folder.exit_code == 2 and "is a directory" in folder.output
    with pytest.raises(FacedataError, match="is a folder: name the card file"):
        write_card(wider, tmp_path, overwrite=True)
    helped = runner.invoke(main, ["card", "-h"])
    assert helped.exit_code == 0 and "--overwrite" in helped.output and "--quiet" in helped.output


def test_corpus_cards_ship_in_the_package() -> None:
    """A wheel install has the corpus cards (licences, quirks): they live in the package and pyproject declares
    them as package data; the top-level data_cards/ is a link to them."""
    import tomllib

    package = Path(facedata.__file__).resolve().parent
    assert CARDS_DIR.is_relative_to(package)
    assert all((CARDS_DIR / name).is_file() for name in CORPUS_CARDS.values())
    assert CORPUS_CARDS_DIR.resolve() == CARDS_DIR
    pyproject = tomllib.loads((package.parent / "pyproject.toml").read_text())
    assert "data_cards/*.md" in pyproject["tool"]["setuptools"]["package-data"]["facedata"]
