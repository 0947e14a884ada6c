"""Reading TSV / CSV / JSONL pairs, and the one-line errors for bad files."""

import json

import pytest
from test_tune_errors import assert_one_line_exit_2, load_tune

from lora_keras.cli import flag_message
from lora_keras.data.corpus import read_pairs
from lora_keras.errors import InputError

BOM = b"\xef\xbb\xbf"


def test_tsv_with_and_without_header(tmp_path):
    (tmp_path / "a.tsv").write_text("source\ttarget\nthe cat .\tle chat .\n\nhi\tsalut\n")
    (tmp_path / "b.tsv").write_text("the cat .\tle chat .\n")
    assert read_pairs(tmp_path / "a.tsv") == [("the cat .", "le chat ."), ("hi", "salut")]
    assert read_pairs(tmp_path / "b.tsv") == [("the cat .", "le chat .")]


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('source,target\n"a, b",c\n"two\nlines",d\n')
    (tmp_path / "a.jsonl").write_text(json.dumps({"source": "x", "target": "y", "id": 3}) + "\n")
    assert read_pairs(tmp_path / "a.csv") == [("a, b", "c"), ("two\nlines", "d")]
    assert read_pairs(tmp_path / "a.jsonl") == [("x", "y")]


@pytest.mark.parametrize(
    "name, data",
    [
        ("bom.tsv", BOM + b"source\ttarget\r\nthe cat .\tle chat .\r\n"),
        ("bom.csv", BOM + b"source,target\r\nthe cat .,le chat .\r\n"),
        ("bom.jsonl", BOM + b'{"source": "the cat .", "target": "le chat ."}\n'),
        ("bom_no_header.tsv", BOM + b"the cat .\tle chat .\n"),
    ],
)
def test_a_utf8_byte_order_mark_is_not_read_as_text(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    assert read_pairs(tmp_path / name) == [("the cat .", "le chat .")]


def test_unicode_line_separators_inside_a_sentence_do_not_split_it(tmp_path):
    (tmp_path / "a.tsv").write_text("a\u2028b\tc\x85d\r\ne\tf\n", newline="")
    (tmp_path / "a.jsonl").write_text(json.dumps({"source": "a\u2028b", "target": "c"}, ensure_ascii=False) + "\n")
    assert read_pairs(tmp_path / "a.tsv") == [("a\u2028b", "c\x85d"), ("e", "f")]
    assert read_pairs(tmp_path / "a.jsonl") == [("a\u2028b", "c")]


def jsonl(*records):
    return "".join(json.dumps(record) + "\n" for record in records)


OK = {"source": "a", "target": "b"}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("missing.tsv", None, "--val: no such file {path}; pass an existing .tsv file"),
        ("data.txt", "a\tb\n", "--val: {path} has an unknown extension; use one of .tsv, .csv, .jsonl"),
        ("empty.tsv", "", "--val: {path} holds no sentence pairs; pass a file with at least one"),
        ("header_only.tsv", "source\ttarget\n", "--val: {path} holds no sentence pairs"),
        ("three.tsv", "a\tb\n\na\tb\tc\n", "--val: line 3 of {path} has 3 field(s), expected 2 (source and target); "
                                          "keep exactly one tab per line"),
        ("one.tsv", "a b c\n", "--val: line 1 of {path} has 1 field(s)"),
        ("blank.tsv", "a\tb\nc\t \n", "--val: line 2 of {path} has an empty target; remove the line or fill it in"),
        ("both_blank.jsonl", jsonl({"source": "", "target": " "}), "line 1 of {path} has an empty source and target"),
        ("three.csv", "source,target\na,b\na,b,c\n", "--val: line 3 of {path} has 3 field(s), expected 2 "
                                                      "(source and target); write source,target and quote a field"),
        ("one.csv", 'a,b\n"x\ny"\n', "--val: line 2 of {path} has 1 field(s)"),  # a row spanning lines 2-3
        ("blank.csv", 'a,b\n"",c\n', "--val: line 2 of {path} has an empty source;"),
        pytest.param("huge.csv", "a,b\n" + "x" * 131073 + ",c\n", "--val: line 2 of {path} is not valid CSV (field "
                     "larger than field limit (131072)); write source,target and quote", id="huge.csv"),
        ("bad.jsonl", "{not json\n", "--val: line 1 of {path} is not valid JSON (Expecting property name"),
        ("list.jsonl", '["a", "b"]\n', "--val: line 1 of {path} holds an array, not an object; write one"),
        ("fields.jsonl", jsonl(OK, {"src": "a", "target": "b"}), '--val: line 2 of {path} has no "source" field;'),
        ("none.jsonl", jsonl({"src": "a"}), 'line 1 of {path} has no "source" or "target" field'),
        ("null.jsonl", jsonl(OK, {"source": "a", "target": None}),
         '--val: line 2 of {path}: "target" is null, not a string; write the sentence as a JSON string'),
        ("number.jsonl", jsonl({"source": 3, "target": "b"}), 'line 1 of {path}: "source" is a number, not a string'),
        ("list_field.jsonl", jsonl({"source": "a", "target": ["b"]}), '"target" is an array, not a string'),
        ("blank.jsonl", jsonl(OK, OK, {"source": " ", "target": "b"}), "--val: line 3 of {path} has an empty source;"),
    ],
)
def test_bad_files_name_the_file_line_and_fix(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_pairs(path, "val")
    # The library names its parameter; a script's line names the flag instead.
    assert str(caught.value).startswith("val: ") and caught.value.parameter == "val"
    line = flag_message(caught.value)
    assert line.startswith("--val: ") and message.format(path=path) in line
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"a\tb\nc\td\ncaf\xe9\tx\n", "line 3 of {path} is not UTF-8 (byte 0xe9 at offset 11: invalid continuation "
                                      "byte); save the file as UTF-8"),
        (BOM + b"a\t\xff\n", "line 1 of {path} is not UTF-8 (byte 0xff at offset 5: invalid start byte)"),
        ("a\tb\n".encode("utf-16"), "{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); "
                                    "save it as UTF-8"),
    ],
)
def test_bytes_that_are_not_utf8_are_located(tmp_path, data, message):
    path = tmp_path / "latin1.tsv"
    path.write_bytes(data)
    with pytest.raises(InputError) as caught:
        read_pairs(path)
    assert str(caught.value).startswith("train: " + message.format(path=path)), str(caught.value)


def test_tune_script_exits_2_with_one_line_naming_file_and_line(tmp_path, capsys):
    """Through `scripts/tune.py` in-process: the files are read before any model loads."""
    train = tmp_path / "train.jsonl"
    train.write_text(jsonl(OK, {"source": "c", "target": None}))
    with pytest.raises(SystemExit) as caught:
        load_tune().main(["--model", str(tmp_path / "no_model"), "--train", str(train), "--source-lang", "English",
                          "--target-lang", "French", "--logdir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert_one_line_exit_2(caught.value.code, err, f'--train: line 2 of {train}: "target" is null, not a string')
    assert err.startswith("tune.py: error: --train: ") and not (tmp_path / "sweep").exists()
