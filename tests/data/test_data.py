import io
import logging

import numpy as np
import pytest

from trusttrace.core.errors import DamagedFileError, UnknownNameError
from trusttrace.core.files import text_sha256
from trusttrace.data import datasets as data_mod
from trusttrace.data.datasets import SPECS, load_dataset, read_statements


def write(tmp_path, text, name="d.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_dimension_from_data_dir(data_dir):
    ds = load_dataset("toxicity", data_dir)
    assert ds.name == "toxicity" and len(ds) == 120 and ds.source == "data-dir"
    assert ds.label1 == "toxic statement"  # the file's polarity, not the paper's Table 3
    assert set(np.unique(ds.labels)) == {0, 1}
    assert len(load_dataset("toxigen", data_dir, limit=50)) == 50


def test_env_var_is_the_data_dir(data_dir, monkeypatch):
    monkeypatch.setenv("TRUSTTRACE_DATA_DIR", str(data_dir))
    assert load_dataset("privacy").source == "data-dir"


def test_missing_file_in_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="stereoset.csv"):
        load_dataset("fairness", tmp_path)


def test_user_jsonl(tmp_path):
    path = write(tmp_path, '{"statement": "a b", "label": 1}\n{"statement": "c", "label": 0}\n', "u.jsonl")
    ds = load_dataset(str(path))
    assert ds.name == "u" and ds.statements == ("a b", "c") and list(ds.labels) == [1, 0]


@pytest.mark.parametrize("text,match", [
    ("text,label\na,1\n", r"lacks column\(s\) \['statement'\]"),
    ("statement,label\na,1\nb,2\n", "data row 2: label '2' is not 0 or 1"),
    ("statement,label\na,1\n,0\n", "data row 2: the statement is empty"),
    ("statement,label\na,1\nb,\n", "data row 2: label '' is not 0 or 1"),
    ("statement,label\n", "has no rows"),
])
def test_bad_input_names_file_row_and_fix(tmp_path, text, match):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=match):
        read_statements(path)


def test_bom_crlf_and_duplicates(tmp_path, caplog):
    path = write(tmp_path, "\ufeffstatement,label\r\nsame,1\r\nsame,1\r\nother,0\r\n")
    with caplog.at_level(logging.WARNING):
        rows = read_statements(path)
    assert rows.statements == ("same", "same", "other") and list(rows.labels) == [1, 1, 0] and rows.groups is None
    assert "duplicate" in caplog.text
    assert rows.sha256 == text_sha256("statement,label\nsame,1\nsame,1\nother,0\n")


def test_not_utf8(tmp_path):
    path = write(tmp_path, "statement,label\ncaf\xe9,1\n", encoding="latin-1")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_statements(path)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_is_verified_and_cached(monkeypatch, tmp_path):
    body = "statement,label\r\nx y,1\r\nz,0\r\n"
    spec = SPECS["privacy"]
    monkeypatch.setitem(SPECS, "privacy", data_mod.DatasetSpec("privacy", spec.file, text_sha256(body), 2,
                                                               spec.label1, spec.label0))
    monkeypatch.setattr(data_mod, "_BY_FILE", {s.file: s for s in SPECS.values()})
    urls = []
    monkeypatch.setattr(data_mod.urllib.request, "urlopen",
                        lambda url, timeout: urls.append(url) or _FakeResponse(body.encode()))
    ds = load_dataset("privacy")
    assert ds.source == "download" and "ChnQ/TracingLLM" in urls[0] and len(ds) == 2
    assert load_dataset("privacy").source == "cache" and len(urls) == 1


def test_download_with_wrong_hash_saves_nothing(monkeypatch):
    monkeypatch.setattr(data_mod.urllib.request, "urlopen", lambda url, timeout: _FakeResponse(b"statement,label\n"))
    with pytest.raises(DamagedFileError, match="sha256"):  # a rerun retries the download: exit 1
        load_dataset("privacy")
    assert not (data_mod.default_cache_dir() / "datasets" / "confaide.csv").exists()


def test_unknown_name():
    with pytest.raises(UnknownNameError, match="Unknown dimension 'honesty'. Choose from reliability"):
        load_dataset("honesty")
