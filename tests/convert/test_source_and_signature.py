"""Format detection, ``--input`` parsing, and the one-line refusals that need no framework installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxopt.convert.signature import format_spec, merge_specs, parse_input_option, parse_input_options
from onnxopt.convert.source import detect_format, is_framework_source
from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.convert.conftest import files_in


def test_input_option_parses_names_dtypes_and_symbolic_dims() -> None:
    spec = parse_input_option("pixel_values:float16:batch,3,224,?")
    assert spec == InputSpec("pixel_values", np.dtype(np.float16), ("batch", 3, 224, None))
    assert format_spec(spec) == "pixel_values:float16:batch,3,224,?"
    assert parse_input_option("ids:int64:[N,128]").shape == ("N", 128)
    assert parse_input_option("flag:bool:").shape == ()


@pytest.mark.parametrize(("text", "fragment"), [
    ("x:float32", "name:dtype:shape"),
    ("x:complex64:1,2", "unknown dtype"),
    ("x:float32:1,2.5", "neither an integer"),
    (":float32:1", "name:dtype:shape"),
])
def test_bad_input_options_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(BadInputError, match=fragment):
        parse_input_option(text)


def test_duplicate_and_unknown_input_names_are_refused() -> None:
    with pytest.raises(BadInputError, match="given twice"):
        parse_input_options(["x:float32:1", "x:float32:2"])
    found = [InputSpec("x", np.dtype(np.float32), (None, 4))]
    with pytest.raises(BadInputError, match="has inputs x"):
        merge_specs(found, [InputSpec("y", np.dtype(np.float32), (1, 4))], "model.pt2")
    override = InputSpec("x", np.dtype(np.float64), ("batch", 4))
    assert merge_specs(found, [override], "m") == [override]


def test_detect_format_by_suffix_and_folder(tmp_path: Path) -> None:
    for name, kind in (("m.pt2", "torch"), ("m.keras", "keras"), ("m.skops", "skops"), ("m.joblib", "pickle"),
                       ("m.onnx", "onnx")):
        (tmp_path / name).write_bytes(b"x")
        assert detect_format(tmp_path / name) == kind
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"x")
    assert detect_format(saved) == "savedmodel"
    assert is_framework_source(saved) and is_framework_source(tmp_path / "m.pt2")
    assert not is_framework_source(tmp_path / "m.onnx")


@pytest.mark.parametrize(("name", "content", "fragment"), [
    ("model.pt", b"x", "torch.export.save"),
    ("model.txt", b"x", "unsupported source format"),
    ("empty.skops", b"", "empty file"),
])
def test_unsupported_sources_are_one_line_exit_2(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
    source = tmp_path / name
    source.write_bytes(content)
    assert_one_line_error(invoke("convert", source, "-o", tmp_path / "out.onnx"), 2, fragment)
    assert files_in(tmp_path) == [name]


def test_folder_without_saved_model_is_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    (folder / "variables.txt").write_text("nothing here")
    for command in ("convert", "optimize"):
        result = invoke(command, folder, "-o", tmp_path / "out.onnx")
        assert_one_line_error(result, 2, "folder holds no TensorFlow SavedModel")
    assert files_in(tmp_path) == ["not_a_model"] and files_in(folder) == ["variables.txt"]


def test_already_onnx_is_sent_to_optimize_or_export(tmp_path: Path) -> None:
    from onnxopt.examples import EXAMPLE_MODEL

    assert_one_line_error(invoke("convert", EXAMPLE_MODEL, "-o", tmp_path / "m.onnx"), 2, "already ONNX")


@pytest.mark.parametrize(("source", "extra", "module"), [
    ("model.pt2", "torch", "torch"),
    ("model.keras", "tf", "tensorflow"),
    ("model.skops", "sklearn", "sklearn"),
])
def test_a_missing_extra_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, extra: str, module: str
) -> None:
    import onnxopt.convert.extras as extras

    real_import = extras.importlib.import_module

    def without_framework(name: str, *args: object) -> object:
        if name == module or name.startswith(module + "."):
            raise ImportError(f"No module named {module!r}")
        return real_import(name, *args)

    monkeypatch.setattr(extras.importlib, "import_module", without_framework)
    path = tmp_path / source
    path.write_bytes(b"not read: the extra is checked first")
    result = invoke("convert", path, "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, 2, f"pip install 'onnxopt[{extra}]'")
    assert files_in(tmp_path) == [source]
