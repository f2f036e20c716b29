"""Property-based fuzzing of every registered annotation format (issue 12, reliability suite).

Each case is one input: a small excerpt of a real file from realdata mutated by hypothesis (byte flips,
truncation, line deletion / duplication / swap, numbers turned into nan / inf / negative / huge / non-numeric,
fields and JSON keys / XML elements removed, encoding garbage, hostile paths, .mat variables replaced), or
generated garbage (bytes, token soup, random JSON / XML / .mat documents). The property, for every case:

- `--strict`: the parse succeeds or raises `InputError` naming a file of the input, with its field (or a
  `FacedataError` naming the input): never another exception;
- default mode: the parse succeeds with the bad items in the rejects report (at least one when strict failed),
  or raises the same kind of file-level error; the manifest holds only finite boxes;
- sniffing raises nothing but `FacedataError`.

Every case runs both modes. The total is counted and printed in the terminal summary (tests/conftest.py).
Derandomized (same cases on every run); FACEDATA_FUZZ_EXAMPLES scales the budget for a deeper local run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tracemalloc
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facedata.errors import FacedataError, InputError
from facedata.parsers.base import FORMATS, ingest, sniff_format

EXAMPLES = int(os.environ.get("FACEDATA_FUZZ_EXAMPLES", "425"))  # mutated real files per format (18 formats)
GARBAGE = max(EXAMPLES // 3, 1)  # generated garbage, per format
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

BAD_NUMBERS = [
    "nan", "NaN", "inf", "-inf", "-1", "-0", "0", "-999999", "999999999", "1e308", "-1e308", "1e39", "3.4e38",
    "1e-320", "abc", "", "0x10", "1,5", "1..2", "--1", "+", "١٢", "12abc", "9" * 40, "1e", "None", "null", "True",
]
BAD_PATHS = ["../x.jpg", "../../etc/passwd", "/etc/passwd", "C:\\x.jpg", "a/../../b.jpg", ".", "..", "\\\\srv\\a.jpg",
             "a\x00b.jpg", "", "a b.jpg", "~/x.jpg"]
JUNK = [b"\xff\xfe", b"\x00", b"\r", b"\n", b"\xe9", b"\xef\xbb\xbf", b" ", b"\t", b"#", b"..", b"/", b"\\", b"\x80",
        b"\xed\xa0\x80", b"\r\n\r\n", b"-", b"0", b"999999999", b"<", b"&", b"]]>", b"{", b"\""]
TOKENS = ["#", "0", "1", "2", "-1", "106", "68", "98", "999999999", "nan", "inf", "1.5", "-3e5", "x", "a/b.jpg",
          "0--Parade/0_Parade_marchingband_1_5.jpg", "img.png", "lfw_5590\\a.jpg", "version: 1", "n_points: 68", "{",
          "}", "..", "/", "\\", "\ufeff", "é", "\x00"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
PATHLIKE = re.compile(rb"[^\s\"<>]+\.(?:jpg|png|jpeg)", re.IGNORECASE)
JSON_KEYS = ["images", "annotations", "categories", "keypoints", "bbox", "id", "image_id", "file_name", "width",
             "height", "num_keypoints", "iscrowd", "category_id", "name", "skeleton", "area", "face_kpts"]
XML_TAGS = ["dataset", "images", "image", "box", "part", "annotation", "object", "bndbox", "xmin", "ymin", "xmax",
            "ymax", "filename", "size", "width", "height", "name", "lm", "x1", "y1", "difficult", "truncated"]
XML_ATTRS = ["file", "top", "left", "width", "height", "name", "x", "y", "ignore"]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=8), st.sampled_from(BAD_NUMBERS))


# ---------------------------------------------------------------------------------------------
# seeds: small excerpts of the real files, one or more per format


@dataclass
class Seed:
    """A valid input of one format: `files` (name -> bytes) are the annotation files the cases mutate; a folder
    format is parsed as the folder `base` (a copy holding its images) with those files replaced."""

    format: str
    files: dict[str, bytes]
    images: Path | None = None  # --images for file formats
    base: Path | None = None  # folder formats: the folder holding the images and the seed files
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "text"  # text, json, xml or mat (what structure-aware mutations apply)


def _lines(path: Path, count: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[:count])


def _blocks(path: Path, images: int, starts: Callable[[bytes], bool]) -> bytes:
    """The first `images` blocks of a file whose blocks start on lines where `starts` holds."""
    lines = path.read_bytes().splitlines(keepends=True)
    heads = [i for i, line in enumerate(lines) if starts(line)]
    return b"".join(lines[: heads[images]])


def _wider_gt(path: Path, images: int) -> bytes:
    lines = path.read_bytes().splitlines(keepends=True)
    i = 0
    for _ in range(images):
        count = int(lines[i + 1])
        i += 2 + max(count, 1)
    return b"".join(lines[:i])


def _small_wider_mat(path: Path, with_boxes: bool) -> bytes:
    """A WIDER .mat of the first 3 images of 2 events, written from the real arrays (cells stay cells)."""
    keys = ["event_list", "file_list"]
    if with_boxes:
        keys += ["face_bbx_list"] + [f"{a}_label_list" for a in
                                     ("blur", "expression", "illumination", "invalid", "occlusion", "pose")]
    data = scipy.io.loadmat(str(path), variable_names=keys)
    out: dict[str, np.ndarray] = {"event_list": data["event_list"][:2]}
    for key in keys[1:]:
        cells = np.empty((2, 1), object)
        for e in range(2):
            cells[e, 0] = data[key][e, 0][:3]
        out[key] = cells
    buf = io.BytesIO()
    scipy.io.savemat(buf, out)
    return buf.getvalue()


def _copy(files: list[Path], src: Path, dest: Path) -> None:
    for file in files:
        target = dest / file.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, target)


def _folder_seed(fmt: str, base: Path, annotations: list[Path], kind: str = "text") -> Seed:
    return Seed(fmt, {str(p.relative_to(base)): p.read_bytes() for p in annotations}, base=base, kind=kind)


def build_seeds(realdata: Path, work: Path) -> dict[str, list[Seed]]:
    wider = realdata / "wider_face"
    seeds = [
        Seed("wider_bbx_gt", {"wider_face_val_bbx_gt.txt": _wider_gt(wider / "wider_face_val_bbx_gt.txt", 4)}),
        Seed("wider_bbx_gt", {"train_bbx_gt.txt": _wider_gt(wider / "wider_face_train_bbx_gt_first20.txt", 2)}),
        Seed("wider_anno_xywh", {"anno_train.txt": _lines(wider / "sierkinhane_anno_train_subset_xywh.txt", 6)}),
        Seed("wider_anno_xywh", {"anno_train.txt": _lines(wider / "sierkinhane_anno_train_xywh.txt", 3)}),
        Seed("mtcnn_wider_list", {"wider_face_train.txt": _lines(wider / "aittsmd_wider_face_train_first20_xyxy.txt",
                                                                 2)}),
        Seed("aittsmd_colmajor", {"wider_face_val.txt": _lines(wider / "aittsmd_wider_face_val_colmajor_xywh.txt",
                                                               6)}),
        Seed("wider_test_list", {"wider_face_test_filelist.txt": _lines(wider / "wider_face_test_filelist.txt", 30)}),
        Seed("wider_mat", {"wider_face_val.mat": _small_wider_mat(wider / "wider_face_val.mat", True)}, kind="mat"),
        Seed("wider_test_mat", {"wider_face_test.mat": _small_wider_mat(wider / "wider_face_test.mat", False)},
             kind="mat"),
        Seed("retinaface_txt", {"label.txt": _blocks(realdata / "wider_face_retinaface_labels/val/label.txt", 4,
                                                     lambda line: line.startswith(b"#"))}),
        Seed("libfd_labelv2", {"labelv2.txt": _blocks(realdata / "wider_face_libfacedetection/labelv2/val/labelv2.txt",
                                                      4, lambda line: line.startswith(b"#"))}),
        Seed("cuhk_lfw_net", {"testImageList.txt": b"".join([line for line in (
            realdata / "lfw_net_7876/testImageList.txt").read_bytes().splitlines(keepends=True)
            if line.startswith(b"net_7876")][:12])},
             images=realdata / "lfw_net_7876"),
        Seed("wflw", {"list_98pt_test_blur.txt": _lines(
            realdata / "wflw/WFLW_annotations/list_98pt_test/list_98pt_test_blur.txt", 3)}),
        Seed("dlib_xml", {"training.xml": (realdata / "dlib_faces/training.xml").read_bytes()}, kind="xml"),
        Seed("dlib_xml", {"testing.xml": (realdata / "dlib_faces/testing.xml").read_bytes()},
             images=realdata / "dlib_faces", kind="xml"),
        Seed("dlib_xml", {"training_with_face_landmarks.xml": _dlib_landmarks(realdata)}, kind="xml"),
    ]
    for name, options in [("coco_val2017/mmpose/test_coco.json", {}), ("aflw/mmpose/test_aflw.json", {}),
                          ("lapa/mmpose/test_lapa.json", {}), ("wflw/mmpose_test_wflw.json", {}),
                          ("300w_lp/mmpose/test_300wlp.json", {"scheme": "ibug68"})]:
        seeds.append(Seed("coco_keypoints", {Path(name).name: (realdata / name).read_bytes()}, options=options,
                          kind="json"))
    seeds += _folder_seeds(realdata, work)
    grouped: dict[str, list[Seed]] = {}
    for seed in seeds:
        grouped.setdefault(seed.format, []).append(seed)
    return grouped


def _dlib_landmarks(realdata: Path) -> bytes:
    """The first image of training_with_face_landmarks.xml (its 68 parts per box), the rest cut."""
    text = (realdata / "dlib_faces/training_with_face_landmarks.xml").read_bytes()
    first = text.index(b"</image>") + len(b"</image>")
    return text[:first] + b"\n</images>\n</dataset>\n"


def _folder_seeds(realdata: Path, work: Path) -> list[Seed]:
    seeds = []
    voc = work / "voc"
    src = realdata / "wider_face_libfacedetection"
    _copy([*src.glob("WIDER_FACE_landmark/annotations/*.xml")], src / "WIDER_FACE_landmark/annotations", voc)
    seeds.append(_folder_seed("voc_xml", voc, sorted(voc.glob("*.xml")), kind="xml"))

    pts = work / "ibug"
    spinkoo = realdata / "300w/spinkoo"
    helen = sorted(spinkoo.glob("helen/testset/*"))[:4]
    _copy(helen, spinkoo, pts)
    video = realdata / "300vw/mmpose"
    _copy(sorted((video / "001").rglob("*"))[:0] + [p for p in (video / "001").rglob("*") if p.is_file()], video, pts)
    seeds.append(_folder_seed("ibug_pts", pts, sorted(pts.rglob("*.pts"))))

    lp = work / "300w_lp"
    _copy(sorted((realdata / "300w_lp/IBUG").glob("*")), realdata / "300w_lp", lp)
    seeds.append(_folder_seed("300w_lp", lp, sorted(lp.rglob("*.mat")), kind="mat"))

    aflw = work / "AFLW2000"
    _copy(sorted((realdata / "aflw2000_3d/AFLW2000").glob("*"))[:6], realdata / "aflw2000_3d/AFLW2000", aflw)
    seeds.append(_folder_seed("aflw2000_3d", aflw, sorted(aflw.glob("*.mat")), kind="mat"))

    lapa = work / "lapa"
    data = json.loads((realdata / "lapa/mmpose/test_lapa.json").read_text())
    names = {image["id"]: image["file_name"] for image in data["images"]}
    (lapa / "landmarks").mkdir(parents=True)
    (lapa / "images").mkdir()
    for annotation in data["annotations"]:
        name = names[annotation["image_id"]]
        points = np.array(annotation["keypoints"], np.float64).reshape(-1, 3)[:, :2]
        body = "106\n" + "".join(f"{x:.6f} {y:.6f}\n" for x, y in points)
        (lapa / "landmarks" / f"{Path(name).stem}.txt").write_text(body)
        shutil.copy(realdata / "lapa/mmpose" / name, lapa / "images" / name)
    seeds.append(_folder_seed("lapa", lapa, sorted((lapa / "landmarks").glob("*.txt"))))
    return seeds


# ---------------------------------------------------------------------------------------------
# mutations


def _at(draw: Callable, size: int) -> int:
    return draw(st.integers(0, max(size - 1, 0)))


def _text_op(draw: Callable, data: bytes) -> bytes:
    """One byte- or line-level mutation."""
    op = draw(st.sampled_from(["flip", "truncate", "delete", "duplicate", "swap", "number", "junk", "token", "path",
                               "overwrite"]))
    lines = data.splitlines(keepends=True) or [b""]
    if op == "flip" and data:
        i = _at(draw, len(data))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if op == "truncate":
        return data[: _at(draw, len(data) + 1)]
    if op in ("delete", "duplicate"):
        i = _at(draw, len(lines))
        return b"".join(lines[:i] + ([lines[i]] * 2 if op == "duplicate" else []) + lines[i + 1:])
    if op == "swap":
        i, j = _at(draw, len(lines)), _at(draw, len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines)
    if op in ("number", "path"):  # a number made nan / inf / huge / not a number, or a path made hostile
        pattern, choices = (NUMBER, BAD_NUMBERS) if op == "number" else (PATHLIKE, BAD_PATHS)
        found = list(pattern.finditer(data))
        if found:
            match = found[_at(draw, len(found))]
            return data[: match.start()] + draw(st.sampled_from(choices)).encode() + data[match.end():]
    if op == "token":  # remove or add a whitespace-separated field on one line
        i = _at(draw, len(lines))
        tokens = lines[i].split()
        if tokens and draw(st.booleans()):
            del tokens[_at(draw, len(tokens))]
        else:
            tokens.insert(_at(draw, len(tokens) + 1), draw(st.sampled_from(BAD_NUMBERS)).encode() or b"0")
        lines[i] = b" ".join(tokens) + b"\n"
        return b"".join(lines)
    if op == "overwrite" and data:
        i = _at(draw, len(data))
        return data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i + 16:]
    i = _at(draw, len(data) + 1)
    return data[:i] + draw(st.sampled_from(JUNK)) + data[i:]


def _json_nodes(value: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        out.append((value, key))
        _json_nodes(child, out)
    return out


def _json_op(draw: Callable, data: bytes) -> bytes:
    """Remove a key / list item, or replace a value by a wrong type, a bad number or a huge count."""
    try:
        document = json.loads(data)
    except ValueError:
        return _text_op(draw, data)
    nodes = _json_nodes(document, [])
    if not nodes:
        return _text_op(draw, data)
    parent, key = nodes[_at(draw, len(nodes))]
    action = draw(st.sampled_from(["remove", "replace", "duplicate"]))
    if action == "remove":
        del parent[key]
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(key, parent[key])
    else:
        parent[key] = draw(st.one_of(SCALARS, st.just([]), st.just({}), st.just(float("nan")),
                                     st.just(999999999), st.just([float("inf")] * 3), st.just(["x", None, -1])))
    return json.dumps(document).encode()


def _xml_op(draw: Callable, data: bytes) -> bytes:
    """Remove an element or an attribute, or give an attribute / text a bad value."""
    try:
        root = ET.fromstring(data)
    except (ET.ParseError, LookupError):  # LookupError: an unknown encoding declared by an earlier mutation
        return _text_op(draw, data)
    pairs = [(parent, child) for parent in root.iter() for child in parent]
    if not pairs:
        return _text_op(draw, data)
    parent, child = pairs[_at(draw, len(pairs))]
    action = draw(st.sampled_from(["remove", "attribute", "text", "duplicate"]))
    if action == "remove":
        parent.remove(child)
    elif action == "duplicate":
        parent.append(child)
    elif action == "attribute" and child.attrib:
        names = sorted(child.attrib)
        name = names[_at(draw, len(names))]
        if draw(st.booleans()):
            del child.attrib[name]
        else:
            child.attrib[name] = draw(st.sampled_from(BAD_NUMBERS + BAD_PATHS))
    else:
        child.text = draw(st.sampled_from(BAD_NUMBERS + BAD_PATHS))
    return ET.tostring(root)


WEIRD_ARRAYS: list[Any] = [
    np.zeros((0, 0)), np.array(["x"]), np.full((2, 68), np.nan), np.full((1, 7), 1e308), np.ones((3, 3)),
    np.array([[999999999]]), np.array([[-1.0]]), np.array([[np.inf, 1, 2, 3]]), np.zeros((68, 2)), np.zeros((2, 68)),
    np.zeros((1, 7)), np.array([[1, 2, 3, 4]], np.int32), np.array([["a", "b"]]), np.array([[True]]),
    np.array([[1 + 2j]]), np.zeros((2, 68, 1)),
]


def _weird_cell(draw: Callable) -> np.ndarray:
    cells = np.empty((draw(st.integers(0, 3)), 1), object)
    for i in range(len(cells)):
        cells[i, 0] = draw(st.sampled_from(WEIRD_ARRAYS))
    return cells


def _mat_bytes(variables: dict[str, Any], compress: bool = False) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, variables, do_compression=compress)
    return buf.getvalue()


def _byte_op(draw: Callable, data: bytes) -> bytes:
    """Binary damage: a flipped byte, a cut, or a run of random bytes written over."""
    op = draw(st.sampled_from(["flip", "truncate", "overwrite"]))
    if op == "flip" and data:
        i = _at(draw, len(data))
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if op == "truncate":
        return data[: _at(draw, len(data) + 1)]
    i = _at(draw, len(data) + 1)
    return data[:i] + draw(st.binary(min_size=1, max_size=32)) + data[i + 32:]


def _mat_op(draw: Callable, data: bytes) -> bytes:
    """A variable removed or replaced by an array of the wrong shape, type or value (a cell too), written anew. Only
    ever applied to a seed as written by savemat: scipy itself is not safe on damaged bytes (see matfile.py)."""
    variables = {k: v for k, v in scipy.io.loadmat(io.BytesIO(data)).items() if not k.startswith("__")}
    names = sorted(variables)
    name = names[_at(draw, len(names))]
    action = draw(st.sampled_from(["remove", "replace", "cell", "nan"]))
    if action == "remove":
        del variables[name]
    elif action == "cell":
        variables[name] = _weird_cell(draw)
    elif action == "nan" and variables[name].dtype.kind == "f":
        value = variables[name].copy()
        with np.errstate(over="ignore"):  # 1e39 in a float32 variable is inf: wanted
            value.flat[_at(draw, value.size)] = draw(st.sampled_from([np.nan, np.inf, -1e308, 1e39, -1.0, 999999999.0]))
        variables[name] = value
    else:
        variables[name] = draw(st.sampled_from(WEIRD_ARRAYS))
    return _mat_bytes(variables, draw(st.booleans()))


MUTATE = {"text": _text_op, "json": _json_op, "xml": _xml_op}


@st.composite
def mutated_case(draw: Callable, seeds: list[Seed]) -> tuple[Seed, dict[str, bytes]]:
    seed = seeds[_at(draw, len(seeds))]
    names = sorted(seed.files)
    name = names[_at(draw, len(names))]
    data = seed.files[name]
    if seed.kind == "mat":  # a variable changed, then maybe bytes damaged
        if draw(st.booleans()):
            data = _mat_op(draw, data)
        for _ in range(draw(st.integers(0 if data is not seed.files[name] else 1, 2))):
            data = _byte_op(draw, data)
        return seed, {**seed.files, name: data}
    for _ in range(draw(st.integers(1, 3))):
        data = draw(st.sampled_from([MUTATE[seed.kind], _text_op]))(draw, data)
    return seed, {**seed.files, name: data}


def _json_garbage() -> st.SearchStrategy[Any]:
    return st.recursive(SCALARS, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(JSON_KEYS), inner, max_size=5)), max_leaves=15)


@st.composite
def _xml_garbage(draw: Callable) -> bytes:
    def element(depth: int) -> ET.Element:
        node = ET.Element(draw(st.sampled_from(XML_TAGS)),
                          draw(st.dictionaries(st.sampled_from(XML_ATTRS), st.sampled_from(BAD_NUMBERS + BAD_PATHS),
                                               max_size=4)))
        node.text = draw(st.sampled_from(["", "1", "-5", "nan", "x.jpg", "999999999"]))
        for _ in range(draw(st.integers(0, 3)) if depth < 3 else 0):
            node.append(element(depth + 1))
        return node

    return ET.tostring(element(0))


@st.composite
def _mat_garbage(draw: Callable) -> bytes:
    keys = ["event_list", "file_list", "face_bbx_list", "blur_label_list", "invalid_label_list", "pt2d", "pts_2d",
            "pt3d_68", "Pose_Para", "x"]
    chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=6))
    variables = {k: _weird_cell(draw) if draw(st.booleans()) else draw(st.sampled_from(WEIRD_ARRAYS)) for k in chosen}
    data = _mat_bytes(variables, draw(st.booleans()))
    return _byte_op(draw, data) if draw(st.booleans()) else data


def garbage_bytes(kind: str) -> st.SearchStrategy[bytes]:
    soup = st.builds(
        lambda tokens, sep: sep.join(tokens).encode("utf-8", "surrogatepass"),
        st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=6)), max_size=80),
        st.sampled_from([" ", "\n", "\r\n", "\t", " \n"]),
    )
    structured = {"json": _json_garbage().map(lambda v: json.dumps(v).encode()), "xml": _xml_garbage(),
                  "mat": _mat_garbage()}.get(kind)
    choices = [st.binary(max_size=2048), soup] + ([structured] if structured is not None else [])
    return st.one_of(choices)


@st.composite
def garbage_case(draw: Callable, seeds: list[Seed]) -> tuple[Seed, dict[str, bytes]]:
    seed = seeds[_at(draw, len(seeds))]
    files = dict(seed.files)
    for name in sorted(files)[: draw(st.integers(1, len(files)))]:
        files[name] = draw(garbage_bytes(seed.kind))
    return seed, files


# ---------------------------------------------------------------------------------------------
# the property


def _within(file: str, place: Path) -> bool:
    resolved = Path(file).resolve()
    return resolved == place.resolve() or place.resolve() in resolved.parents


def _check_error(exc: FacedataError, place: Path) -> None:
    """The documented error: an InputError naming a file of the input and its field, or a FacedataError naming
    the input."""
    assert "\n" not in str(exc).strip(), f"not one line: {exc!r}"
    if isinstance(exc, InputError):
        assert _within(exc.file, place), f"error names {exc.file}, not the input {place}: {exc}"
        assert exc.field, f"no field: {exc}"
        assert exc.line is None or exc.line >= 1, exc
    else:
        assert str(place) in str(exc) or place.name in str(exc), f"error does not name the input {place}: {exc}"


def _parse(seed: Seed, path: Path, strict: bool) -> tuple[Any, Any] | FacedataError:
    try:
        return ingest(path, format=seed.format, images=seed.images, strict=strict, format_options=seed.options)
    except FacedataError as exc:
        _check_error(exc, path)
        return exc


def check_case(seed: Seed, files: dict[str, bytes], work: Path, counter: Counter) -> None:
    """Write the case, then check sniffing, a default parse and, where it skipped an item, a strict one (the parsers
    never branch on `strict`: a run without a fatal skip is the same run under --strict)."""
    counter[seed.format] += 1
    if seed.base is not None:
        path = work / seed.base.name
        if not path.exists():
            shutil.copytree(seed.base, path, symlinks=True)
    else:
        path = work / next(iter(files))
    for name, data in files.items():
        (path / name if seed.base is not None else path).write_bytes(data)
    try:
        sniff_format(path)
    except FacedataError as exc:
        _check_error(exc, path)
    default = _parse(seed, path, strict=False)
    if isinstance(default, FacedataError):
        assert isinstance(_parse(seed, path, strict=True), FacedataError), f"--strict passed, default: {default}"
        return
    manifest, rejects = default
    if any(r.kind != REPAIRED for r in rejects.items):
        assert isinstance(_parse(seed, path, strict=True), FacedataError), f"--strict passed: {rejects.items}"
    boxes = manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    assert np.isfinite(boxes).all(), f"non-finite box in the manifest: {boxes[~np.isfinite(boxes).all(axis=1)][:3]}"


REPAIRED = "duplicate face"  # the one kind of skip that does not stop --strict (Rejects.reject fatal=False)


@pytest.fixture(scope="module")
def seeds(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Seed]]:
    grouped = build_seeds(realdata, tmp_path_factory.mktemp("fuzz_seeds"))
    for fmt, group in grouped.items():
        for seed in group:
            work = tmp_path_factory.mktemp(f"seed_{fmt}")
            check_case(seed, seed.files, work, Counter())
            result = _parse(seed, work / (seed.base.name if seed.base else next(iter(seed.files))), True)
            assert not isinstance(result, FacedataError), f"seed of {fmt}: {result}"
            assert len(result[0].images), f"seed of {fmt} reads no image"
    return grouped


def test_every_format_has_a_seed(seeds: dict[str, list[Seed]]) -> None:
    assert set(seeds) == set(FORMATS.names())


FORMAT_NAMES = FORMATS.names()


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_real_files(fmt: str, seeds: dict[str, list[Seed]], tmp_path: Path, fuzz_cases: Counter,
                            data: st.DataObject) -> None:
    seed, files = data.draw(mutated_case(seeds[fmt]))
    check_case(seed, files, tmp_path, fuzz_cases)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@settings(FUZZ, max_examples=GARBAGE)
@given(data=st.data())
def test_generated_garbage(fmt: str, seeds: dict[str, list[Seed]], tmp_path: Path, fuzz_cases: Counter,
                           data: st.DataObject) -> None:
    seed, files = data.draw(garbage_case(seeds[fmt]))
    check_case(seed, files, tmp_path, fuzz_cases)


# ---------------------------------------------------------------------------------------------
# what the fuzzer found, one plain regression test each (each failed before its fix)


def test_numbers_beyond_float32_are_rejected_not_stored_as_inf(realdata: Path, tmp_path: Path) -> None:
    """1e39 is a finite float64 but inf in the manifest's float32 columns: rejected like NaN, naming the field."""
    lines = (realdata / "wider_face/aittsmd_wider_face_val_colmajor_xywh.txt").read_text().splitlines()[:2]
    path = tmp_path / "wider_face_val.txt"
    path.write_text(lines[0].replace(" 345 ", " 1e39 ", 1) + "\n" + lines[1] + "\n")
    manifest, rejects = ingest(path, format="aittsmd_colmajor")
    assert np.isfinite(manifest.faces[["x1", "y1", "x2", "y2"]].to_numpy()).all() and len(manifest.images) == 1
    (item,) = rejects.items
    assert item.line == 1 and "1e39" in item.reason and "at most 1e+09" in item.reason
    xml = tmp_path / "training.xml"
    huge = b"left='" + b"9" * 40 + b"'"
    xml.write_bytes((realdata / "dlib_faces/training.xml").read_bytes().replace(b"left='194'", huge))
    with pytest.raises(InputError, match=r"training.xml:8: left: <box> left: expected an integer of at most 1e\+09"):
        ingest(xml, format="dlib_xml", strict=True)


def test_dlib_xml_without_boxes(tmp_path: Path) -> None:
    path = tmp_path / "training.xml"
    path.write_text("<dataset><images><image file='a.jpg'/><image file='b.jpg'></image></images></dataset>")
    manifest, rejects = ingest(path, format="dlib_xml", strict=True)
    assert list(manifest.images["rel_path"]) == ["a.jpg", "b.jpg"] and len(manifest.faces) == 0 and not rejects.items


def test_coco_without_a_valid_annotation_and_with_odd_categories(realdata: Path, tmp_path: Path) -> None:
    document = json.loads((realdata / "coco_val2017/mmpose/test_coco.json").read_text())
    document["categories"][0]["keypoints"] = 17  # not a list of names
    path = tmp_path / "test_coco.json"
    path.write_text(json.dumps(document))
    document["annotations"][0]["image_id"] = [document["annotations"][0]["image_id"]]  # a list: not hashable
    path.write_text(json.dumps(document))
    manifest, rejects = ingest(path, format="coco_keypoints")
    assert len(manifest.faces) == 13 and [(r.field, r.kind) for r in rejects.items] == [("image_id", "unknown image")]
    document["annotations"][0]["image_id"] = document["annotations"][0]["image_id"][0]
    for annotation in document["annotations"]:
        annotation["keypoints"] = "x"
    path.write_text(json.dumps(document))
    manifest, rejects = ingest(path, format="coco_keypoints", format_options={"scheme": "coco17"})
    assert len(manifest.faces) == 0 and len(rejects.items) == 14
    with pytest.raises(InputError, match=r"test_coco.json: keypoints: "):
        ingest(path, format="coco_keypoints", format_options={"scheme": "coco17"}, strict=True)


@pytest.mark.parametrize("encoding", ["ISOnan-1", "utf-99"])
def test_xml_declaring_an_unknown_encoding(realdata: Path, tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "training.xml"
    path.write_bytes((realdata / "dlib_faces/training.xml").read_bytes().replace(b"ISO-8859-1", encoding.encode()))
    with pytest.raises(InputError, match=rf"training.xml:1: xml: unreadable XML declaration: .*{encoding}"):
        ingest(path, format="dlib_xml")
    voc = tmp_path / "voc"
    voc.mkdir()
    for xml in (realdata / "wider_face_libfacedetection/WIDER_FACE_rect/annotations").glob("*.xml"):
        shutil.copy(xml, voc)
    bad = sorted(voc.glob("*.xml"))[0]
    bad.write_bytes(b"<?xml version='1.0' encoding='%s'?>\n" % encoding.encode() + bad.read_bytes().split(b"?>", 1)[-1]
                    if bad.read_bytes().startswith(b"<?xml") else
                    b"<?xml version='1.0' encoding='%s'?>\n" % encoding.encode() + bad.read_bytes())
    manifest, rejects = ingest(voc, format="voc_xml")
    assert len(manifest.images) == 1 and [(Path(r.file), r.line, r.field) for r in rejects.items] == [(bad, 1, "xml")]


def _wider_val_mat(realdata: Path) -> dict[str, np.ndarray]:
    data = scipy.io.loadmat(str(realdata / "wider_face/wider_face_val.mat"))
    return {k: v[:2] if k.endswith("_list") else v for k, v in data.items() if not k.startswith("__")}


def test_wider_mat_with_a_list_shorter_than_event_list(realdata: Path, tmp_path: Path) -> None:
    data = _wider_val_mat(realdata)
    data["blur_label_list"] = data["blur_label_list"][:1]  # no blur labels for the second event
    path = tmp_path / "wider_face_val.mat"
    scipy.io.savemat(path, data)
    manifest, rejects = ingest(path, format="wider_mat")
    second = data["event_list"][1, 0][0]
    assert len(manifest.images) == len(data["file_list"][0, 0]) and not manifest.images["event"].eq(second).any()
    assert rejects.items and all(r.field == "blur_label_list" and second in r.reason for r in rejects.items)


def _flip_type(data: bytes) -> bytes:
    """The first miDOUBLE data tag (type 9, little-endian) given an unknown type: scipy 1.17 segfaulted on it."""
    at = data.index(struct.pack("<I", 9), 128)
    return data[:at] + struct.pack("<I", 0x2809) + data[at + 4:]


def test_damaged_mat_files_are_named_not_crashed_on(realdata: Path, tmp_path: Path) -> None:
    """Each damage is an InputError naming the file: run in a child process, since the unguarded failure was a
    segmentation fault of the whole process (which no pytest.raises can catch)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {k: v for k, v in scipy.io.loadmat(realdata / "300w_lp/IBUG/IBUG_image_008_1_0.mat").items()
                           if not k.startswith("__")})
    plain = buf.getvalue()
    bomb = io.BytesIO()
    scipy.io.savemat(bomb, {"pt2d": np.zeros((1, 1))}, do_compression=True)
    header = bomb.getvalue()[:128]
    inflating = zlib.compress(struct.pack("<II", 14, 1 << 31) + bytes(2 << 20), 9)  # the child allows 1 MiB
    cases = {
        "type.mat": (_flip_type(plain), "damaged MATLAB v5 .mat file: .* unknown data type 10249"),
        "cut.mat": (plain[:2000], "truncated MATLAB v5 .mat file: the variable at byte"),
        "header.mat": (plain[:100], "truncated MATLAB v5 .mat file: 100 bytes"),
        "bomb.mat": (header + struct.pack("<II", 15, len(inflating)) + inflating,
                     "damaged MATLAB v5 .mat file: .*inflates beyond 1 MiB"),
        "dims.mat": (_huge_cell(), "damaged MATLAB v5 .mat file: .*array of 100000x100000 elements stored in"),
    }
    for name, (data, _) in cases.items():
        (tmp_path / name).write_bytes(data)
    child = (
        "import sys, json\nfrom pathlib import Path\nfrom facedata.parsers import matfile\n"
        "from facedata.parsers.matfile import load_mat\nmatfile.MAX_INFLATED = 1 << 20\n"
        "from facedata.errors import InputError\nout = {}\n"
        "for name in sys.argv[2:]:\n"
        "    try:\n        load_mat(Path(sys.argv[1]) / name, ['pt2d'])\n        out[name] = 'loaded'\n"
        "    except InputError as exc:\n        out[name] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    run = subprocess.run([sys.executable, "-c", child, str(tmp_path), *cases], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    messages = json.loads(run.stdout)
    for name, (_, pattern) in cases.items():
        assert re.search(rf"{name}: file: {pattern}", messages[name]), messages[name]


def _huge_cell() -> bytes:
    """A cell array declaring 100000 x 100000 cells in a few bytes (scipy would allocate 80 GB of pointers)."""
    buf = io.BytesIO()
    cells = np.empty((1, 1), object)
    cells[0, 0] = np.zeros((1, 1))
    scipy.io.savemat(buf, {"pt2d": cells})
    data = buf.getvalue()
    dims = data.index(struct.pack("<IIii", 5, 8, 1, 1))
    return data[:dims] + struct.pack("<IIii", 5, 8, 100000, 100000) + data[dims + 16:]


@pytest.mark.parametrize("fmt, text", [
    ("wider_bbx_gt", "0--Parade/a.jpg\n999999999\n1 2 3 4 0 0 0 0 0 0\n"),
    ("retinaface_txt", "# 0--Parade/a.jpg\n" + "1 2 3 4\n" * 3),
])
def test_declared_counts_do_not_allocate(tmp_path: Path, fmt: str, text: str) -> None:
    """A face count of 999999999 is checked against the lines that follow, never used to size an array."""
    path = tmp_path / "labels.txt"
    path.write_text(text)
    tracemalloc.start()
    try:
        ingest(path, format=fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20, f"{peak / 2**20:.0f} MiB for a {len(text)}-byte file"


def test_folder_count_lines_do_not_allocate(tmp_path: Path) -> None:
    lapa = tmp_path / "lapa"
    (lapa / "landmarks").mkdir(parents=True)
    (lapa / "images").mkdir()
    (lapa / "landmarks" / "a.txt").write_text("999999999\n1 2\n")
    (tmp_path / "pts").mkdir()
    (tmp_path / "pts" / "a.pts").write_text("version: 1\nn_points: 999999999\n{\n1 2\n}\n")
    tracemalloc.start()
    try:
        for folder in (lapa, tmp_path / "pts"):
            manifest, rejects = ingest(folder)
            assert len(manifest.faces) == 0 and "999999999" in rejects.items[0].reason
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20
