"""Security (issue 12): image paths never leave their root, nothing read from a file is unpickled or evaluated, the
`--where` language cannot reach Python, and models load only as ONNX.

Each hostile input carries a sentinel: unpickling or evaluating it would create a file, and the tests check that the
file never appears (a refusal that still ran the payload would pass an error-message check alone).
"""

from __future__ import annotations

import io
import json
import pathlib
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import scipy.io
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facedata.buildrun import PROGRESS_META_NAME, PROGRESS_NAME, _load_progress
from facedata.cli import main
from facedata.errors import FacedataError, InputError
from facedata.manifest import Manifest
from facedata.parsers.base import ingest
from facedata.parsers.matfile import load_mat
from facedata.query import QueryError, evaluate, parse_query

PACKAGE = Path(__file__).resolve().parents[1] / "facedata"


class _Payload:
    """Unpickling this creates `sentinel` (pathlib.Path.touch is an importable callable, as in real exploits)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return pathlib.Path.touch, (self.sentinel,)


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def _one_line_error(code: int, output: str) -> str:
    assert code != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and not any(line.startswith("error") for line in lines[:-1]), output
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# image paths


@pytest.fixture()
def cuhk_root(realdata: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """An image root with two real images, a real image outside it, and a symlink inside pointing to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "net_7876").mkdir(parents=True)
    outside.mkdir()
    lines = (realdata / "lfw_net_7876/testImageList.txt").read_text().splitlines()
    net = [line for line in lines if line.startswith("net_7876")][:2]
    for line in net:
        name = line.split()[0].replace("\\", "/")
        shutil.copy(realdata / "lfw_net_7876" / name, root / name)
    shutil.copy(root / net[0].split()[0].replace("\\", "/"), outside / "secret.jpg")
    (root / "net_7876" / "link.jpg").symlink_to(outside / "secret.jpg")
    numbers = " ".join(net[0].split()[1:])
    annotations = tmp_path / "testImageList.txt"
    annotations.write_text("\n".join([
        net[0], net[1],
        f"net_7876\\link.jpg {numbers}",
        f"..\\outside\\secret.jpg {numbers}",
        f"{outside / 'secret.jpg'} {numbers}",
        f"C:\\outside\\secret.jpg {numbers}",
    ]) + "\n")
    return annotations, root, outside


def test_ingest_refuses_paths_out_of_the_image_root(cuhk_root: tuple[Path, Path, Path]) -> None:
    annotations, root, _ = cuhk_root
    manifest, rejects = ingest(annotations, format="cuhk_lfw_net", images=root)
    assert len(manifest.images) == 2 and not manifest.images["rel_path"].str.contains("link|secret").any()
    assert sorted((r.line, r.field, r.kind) for r in rejects.items) == [
        (3, "path", "bad path"), (4, "path", "bad path"), (5, "path", "bad path"), (6, "path", "bad path")]
    link = next(r for r in rejects.items if r.line == 3)
    assert "'net_7876/link.jpg' resolves outside the image root" in link.reason
    with pytest.raises(InputError, match=r"testImageList.txt:4: path: expected a path relative to the image root"):
        ingest(annotations, format="cuhk_lfw_net", images=root, strict=True)
    annotations.write_text("".join(annotations.read_text().splitlines(keepends=True)[:3]))
    with pytest.raises(InputError, match=r"testImageList.txt:3: path: 'net_7876/link.jpg' resolves outside"):
        ingest(annotations, format="cuhk_lfw_net", images=root, strict=True)


def _manifest_with(tmp_path: Path, realdata: Path, rel_path: str) -> Path:
    """A real manifest (one CUHK image, its root recorded) whose first image path is replaced by `rel_path`."""
    root = tmp_path / "root"
    (root / "net_7876").mkdir(parents=True, exist_ok=True)
    line = next(line for line in (realdata / "lfw_net_7876/testImageList.txt").read_text().splitlines()
                if line.startswith("net_7876"))
    name = line.split()[0].replace("\\", "/")
    shutil.copy(realdata / "lfw_net_7876" / name, root / name)
    (tmp_path / "list.txt").write_text(line + "\n")
    manifest, _ = ingest(tmp_path / "list.txt", format="cuhk_lfw_net", images=root)
    images = manifest.images.copy()
    images.loc[0, "rel_path"] = rel_path
    path = tmp_path / "hostile.parquet"
    Manifest(images, manifest.faces, manifest.provenance).write(path)
    return path


@pytest.mark.parametrize("rel_path", ["../outside/secret.jpg", "/etc/passwd", "net_7876/../../x.jpg", "C:/x.jpg",
                                      "\\\\server\\share\\x.jpg", "a//b.jpg", "./a.jpg"])
def test_a_manifest_with_an_escaping_path_is_refused(realdata: Path, tmp_path: Path, rel_path: str) -> None:
    """ingest never writes such a path; an edited manifest holding one is refused where every command reads it,
    before build, export or report joins it to a root or to an output folder."""
    path = _manifest_with(tmp_path, realdata, rel_path)
    with pytest.raises(FacedataError, match="is not a path relative to its root without '..'"):
        Manifest.read(path)
    out = tmp_path / "voc"
    output = _one_line_error(*_run("export", "voc", path, "-o", out))
    assert "rel_path" in output and not out.exists()


def test_export_cannot_write_outside_its_output_folder(realdata: Path, tmp_path: Path) -> None:
    """The per-image exporters write at out/rel_path: an absolute rel_path would have escaped `-o`."""
    target = tmp_path / "elsewhere" / "planted"
    path = _manifest_with(tmp_path, realdata, str(target) + ".jpg")
    _one_line_error(*_run("export", "yolo", path, "-o", tmp_path / "yolo"))
    _one_line_error(*_run("export", "voc", path, "-o", tmp_path / "voc"))
    assert not (tmp_path / "elsewhere").exists()


def test_build_and_report_refuse_a_symlink_planted_after_ingest(realdata: Path, tmp_path: Path) -> None:
    """An image replaced by a link out of the root after ingest: reading images (build, report, verify) refuses it."""
    path = _manifest_with(tmp_path, realdata, "net_7876/link.jpg")
    secret = tmp_path / "secret.jpg"
    cv2.imwrite(str(secret), np.zeros((400, 400, 3), np.uint8))
    (tmp_path / "root" / "net_7876" / "link.jpg").symlink_to(secret)
    manifest = Manifest.read(path)
    with pytest.raises(FacedataError, match=r"'net_7876/link.jpg' resolves outside its image root"):
        manifest.image_paths()
    output = _one_line_error(*_run("build", "pnet", "--detections", path, "-o", tmp_path / "pnet"))
    assert "resolves outside its image root" in output
    assert _run("report", path, "-o", tmp_path / "report")[0] == 0  # the report is written, without the image
    page = (tmp_path / "report" / "index.html").read_text()
    assert "images not shown" in page and "resolves outside its image root" in page


# ---------------------------------------------------------------------------------------------
# no pickle, no eval

# Calls that run code from data (or unpickle), each with what makes it safe when it is allowed at all.
FORBIDDEN = {
    r"\bimport (?:c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b|\bfrom (?:c?pickle|dill|joblib) import": "pickle",
    r"(?<![\w.])(?:eval|exec)\(": "eval/exec",
    r"(?<![\w.])compile\(": "compile()",
    r"\b__import__\(": "__import__",
    r"allow_pickle\s*=\s*True": "allow_pickle=True",
    r"\byaml\.(?:load|unsafe_load|full_load)\(": "yaml.load",
    r"\btorch\.load\(": "torch.load",
    r"\b(?:pd|pandas)\.read_pickle\(": "read_pickle",
    r"\.query\(|\.eval\(": "pandas query/eval",
    r"\bpickle\.loads?\(": "pickle.load",
}


def _source() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_package_never_unpickles_or_evaluates() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}: {what}" for path, text in _source().items()
             for pattern, what in FORBIDDEN.items() if re.search(pattern, text)]
    assert not found, found


def test_numpy_and_scipy_loads_are_the_safe_ones() -> None:
    """np.load always with allow_pickle=False; scipy's MATLAB reader only behind matfile's structural check."""
    for path, text in _source().items():
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{path}: {call}"
        if re.search(r"scipy\.io\.(?:loadmat|whosmat)\(", text):
            assert path.name == "matfile.py", f"{path}: reads .mat files outside facedata/parsers/matfile.py"


def test_the_source_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The patterns above do match the calls they forbid (a scan that matches nothing proves nothing)."""
    samples = ["import pickle", "x = eval(text)", "exec(code)", "np.load(f, allow_pickle=True)", "yaml.load(fh)",
               "torch.load('m.pt')", "pd.read_pickle(p)", "frame.query(where)", "__import__('os')",
               "compile(s, 'f', 'e')"]
    for sample in samples:
        assert any(re.search(pattern, sample) for pattern in FORBIDDEN), sample
    assert not any(re.search(p, "re.compile(x); ast.literal_eval; self.evaluate(q)") for p in FORBIDDEN)


def test_a_pickled_progress_table_is_never_unpickled(tmp_path: Path) -> None:
    """The resume files of a build: an object-dtype .npy (a pickle inside) reads as no progress, never runs."""
    sentinel = tmp_path / "pwned"
    payload = np.empty(3, object)
    payload[:] = [_Payload(sentinel)] * 3
    np.save(tmp_path / PROGRESS_NAME, payload, allow_pickle=True)
    (tmp_path / PROGRESS_META_NAME).write_text(json.dumps({"fingerprint": "f", "images": 3}))
    with pytest.raises(ValueError, match="allow_pickle"):  # the premise: the file holds a pickle
        np.load(tmp_path / PROGRESS_NAME, allow_pickle=False)
    assert _load_progress(tmp_path, "f", 3) is None
    assert not sentinel.exists()


def test_a_mat_file_of_objects_and_cells_is_refused_not_run(realdata: Path, tmp_path: Path) -> None:
    """MATLAB cells and structs where numbers belong are rejected by shape and type; an HDF5 (v7.3) file is
    refused before any reader sees it."""
    folder = tmp_path / "AFLW2000"
    folder.mkdir()
    shutil.copy(realdata / "aflw2000_3d/AFLW2000/image00050.jpg", folder)
    data = {k: v for k, v in scipy.io.loadmat(realdata / "aflw2000_3d/AFLW2000/image00050.mat").items()
            if not k.startswith("__")}
    cells = np.empty((3, 68), object)
    cells[:] = "x"
    data["pt3d_68"] = cells
    data["Pose_Para"] = {"code": "__import__('os')"}
    scipy.io.savemat(folder / "image00050.mat", data)
    manifest, rejects = ingest(folder)
    assert len(manifest.faces) == 0
    assert [(r.field, r.kind) for r in rejects.items] == [("pt3d_68", "wrong shape")]
    hdf5 = tmp_path / "v73.mat"
    hdf5.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(512))
    with pytest.raises(InputError, match="MATLAB v7.3 \\(HDF5\\) file"):
        load_mat(hdf5, ["pt3d_68"])


def test_a_pickle_named_mat_is_not_read(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "wider_face_val.mat"
    path.write_bytes(pickle.dumps(_Payload(sentinel)))
    output = _one_line_error(*_run("ingest", path, "--format", "wider_mat", "-o", tmp_path / "m.parquet"))
    assert "not a MATLAB v5 .mat file" in output
    assert not sentinel.exists()


# ---------------------------------------------------------------------------------------------
# the --where language

COLUMNS = ["blur", "occlusion", "x1", "event", "width"]
HOSTILE = [
    "__import__('os').system('touch {s}')",
    "open('{s}', 'w')",
    "eval(\"open('{s}', 'w')\")",
    "exec('import os')",
    "blur.__class__",
    "blur.__class__.__bases__[0].__subclasses__()",
    "().__class__.__base__.__subclasses__()",
    "blur.real",
    "x1.__globals__",
    "__builtins__",
    "__class__ == 1",
    "blur[0]",
    "event['__class__']",
    "[c for c in blur]",
    "(lambda: 1)()",
    "lambda: open('{s}', 'w')",
    "@blur",
    "blur if 1 else 2",
    "import os",
    "blur == 1; import os",
    "f'{{blur}}'",
    "(yield)",
    "globals()",
    "getattr(blur, '__class__')",
    "blur == {{'a': 1}}",
    "blur ** 99999999",
    "(x := 1)",
    "*blur",
    "blur in event.__class__",
    "blur in [__import__('os')]",
    "blur in [len]",
    "not " * 2000 + "blur",
    "(" * 500 + "blur" + ")" * 500,
    "blur == " + "1" * 5000,
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"blur": [0, 1, 2], "occlusion": [0, 1, -1], "x1": [1.5, 2.0, np.nan],
                         "event": ["a", "b", None], "width": pd.array([10, None, 30], dtype="Int32")})


@pytest.mark.parametrize("template", HOSTILE)
def test_where_cannot_reach_python(tmp_path: Path, template: str) -> None:
    sentinel = tmp_path / "pwned"
    text = template.format(s=sentinel)
    frame = _frame()
    with pytest.raises(QueryError):
        evaluate(parse_query(text, COLUMNS), frame.__getitem__, len(frame))
    assert not sentinel.exists()


def test_where_through_the_cli_is_one_line(realdata: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "val.parquet"
    source = tmp_path / "val.txt"
    source.write_bytes(b"".join((realdata / "wider_face/wider_face_val_bbx_gt.txt").read_bytes()
                                .splitlines(keepends=True)[:5]))
    assert _run("ingest", source, "-o", manifest)[0] == 0
    sentinel = tmp_path / "pwned"
    output = _one_line_error(*_run("filter", manifest, "--where", f"__import__('os').system('touch {sentinel}')",
                                   "-o", tmp_path / "out.parquet"))
    assert "--where" in output and "not allowed" in output
    assert not sentinel.exists() and not (tmp_path / "out.parquet").exists()


WHERE_TOKENS = ["blur", "occlusion", "x1", "event", "width", "1", "-2.5", "'a'", "True", "==", "!=", "<", "<=", ">",
                "and", "or", "not", "in", "[", "]", "(", ")", ",", "+", "-", "*", "/", ".", "__class__", "__dict__",
                "__globals__", "__import__", "os", "open", "(", "'", '"', "lambda", ":", "[0]", "@", "if", "else",
                "for", "import", "**", "%", "{", "}", "\\", "\n", "nan", "1e400", "9" * 30]


@settings(max_examples=500, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WHERE_TOKENS), min_size=1, max_size=25), st.sampled_from([" ", ""]))
def test_where_fuzz_only_ever_raises_query_error(tokens: list[str], separator: str) -> None:
    """Token soup from the language and from Python: parsing and evaluating either works or is a QueryError."""
    frame = _frame()
    try:
        mask = evaluate(parse_query(separator.join(tokens), COLUMNS), frame.__getitem__, len(frame))
    except QueryError as exc:
        assert "\n" not in str(exc)
        return
    assert mask.dtype == bool and mask.shape == (3,)


# ---------------------------------------------------------------------------------------------
# models load only as ONNX


@pytest.mark.parametrize("suffix", [".pt", ".pkl", ".onnx"])
def test_a_pickled_model_is_never_unpickled(tmp_path: Path, suffix: str) -> None:
    """A PyTorch checkpoint or a pickle given as --pnet (even named .onnx) is a one-line error; its payload never
    runs. (torch.save writes a zip of pickles; a bare pickle is the simplest such file.)"""
    sentinel = tmp_path / "pwned"
    model = tmp_path / f"pnet{suffix}"
    buf = io.BytesIO()
    pickle.dump({"state_dict": _Payload(sentinel)}, buf)
    model.write_bytes(buf.getvalue())
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    output = _one_line_error(*_run("detect", image, "--pnet", model))
    assert "--pnet" in output and "ONNX" in output
    assert not sentinel.exists()


def test_a_number_run_into_a_keyword_is_a_query_error_not_a_warning_on_stderr() -> None:
    """`blur < 1or 2`: Python's parser accepts it with a warning on stderr ("invalid decimal literal"); the query
    language refuses it, silently."""
    import warnings

    from facedata.query import QueryError, parse_query

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(QueryError, match="invalid decimal literal"):
            parse_query("blur < 1or blur > 2", ["blur"])
    assert not caught
