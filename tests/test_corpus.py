"""Reading TSV / CSV / JSONL pairs, and the errors for bad files."""

import json

import pytest

from lora_keras.corpus import read_pairs
from lora_keras.errors import InputError


def test_tsv_with_and_without_header(tmp_path):
    (tmp_path / "a.tsv").write_text("source\ttarget\nthe cat .\tle chat .\n\nhi\tsalut\n")
    (tmp_path / "b.tsv").write_text("the cat .\tle chat .\n")
    assert read_pairs(tmp_path / "a.tsv") == [("the cat .", "le chat ."), ("hi", "salut")]
    assert read_pairs(tmp_path / "b.tsv") == [("the cat .", "le chat .")]


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('source,target\n"a, b",c\n')
    (tmp_path / "a.jsonl").write_text(json.dumps({"source": "x", "target": "y", "id": 3}) + "\n")
    assert read_pairs(tmp_path / "a.csv") == [("a, b", "c")]
    assert read_pairs(tmp_path / "a.jsonl") == [("x", "y")]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing.tsv", None, "no such file"),
        ("empty.tsv", "", "holds no sentence pairs"),
        ("header_only.tsv", "source\ttarget\n", "holds no sentence pairs"),
        ("three.tsv", "a\tb\tc\n", "line 1 .* has 3 field"),
        ("one.tsv", "a b c\n", "has 1 field"),
        ("blank.tsv", "a\t \n", "empty source or target"),
        ("bad.jsonl", "{not json\n", "line 1 of .* is not valid JSON"),
        ("fields.jsonl", '{"src": "a"}\n', 'lacks "source" and "target"'),
        ("data.txt", "a\tb\n", "unknown extension"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=message) as caught:
        read_pairs(path, "--val")
    assert str(caught.value).startswith("--val: ") and "\n" not in str(caught.value)
