"""A CSV of texts: read as strings ("NA" stays a text), a missing column named with the columns
there are, empty texts and labels refused with their CSV lines, and tokenization padded to the
longest text or to a fixed length, with the texts cut at max_length counted."""
import numpy as np
import pandas as pd
import pytest

from optlab.data.text_inputs import encode_texts, read_text_csv
from optlab.testing.tiny_text import texts_csv, tiny_tokenizer


def test_reads_texts_and_labels_as_strings(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["hello there", "NA", "null", "refund 3"], "label": ["greeting", "billing", 1, 0]}
                 ).to_csv(path, index=False)
    table = read_text_csv(path, "text", "label")
    assert table.texts == ("hello there", "NA", "null", "refund 3")
    assert table.labels == ("greeting", "billing", "1", "0") and len(table) == 4
    assert read_text_csv(path, "text").labels is None


def test_a_missing_column_lists_the_columns(tmp_path):
    path = texts_csv(tmp_path / "t.csv", rows=4)
    with pytest.raises(ValueError, match=r"has no column 'sentence'; its columns are: 'id', 'text', 'label'"):
        read_text_csv(path, "sentence")
    with pytest.raises(ValueError, match=r"has no column 'intent'; its columns are: 'id', 'text', 'label'"):
        read_text_csv(path, "text", "intent")
    with pytest.raises(ValueError, match="both 'text'"):
        read_text_csv(path, "text", "text")


def test_empty_texts_and_labels_are_named_by_csv_line(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"text": ["ok", "", "  ", "fine"], "label": ["a", "b", "c", ""]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"2 of 4 texts in column 'text' are empty \(CSV lines 3, 4\)"):
        read_text_csv(path, "text")
    path.write_text("text,label\nok,a\nfine,\n")
    with pytest.raises(ValueError, match=r"1 of 2 labels in column 'label' are empty \(CSV lines 3\)"):
        read_text_csv(path, "text", "label")


def test_empty_and_unreadable_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_text_csv(tmp_path / "empty.csv", "text")
    (tmp_path / "header.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="a header but no rows"):
        read_text_csv(tmp_path / "header.csv", "text")
    (tmp_path / "binary.csv").write_bytes(b"text\n\xff\xfe\x00bad\n")
    with pytest.raises(ValueError, match="not a readable CSV"):
        read_text_csv(tmp_path / "binary.csv", "text")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_text_csv(tmp_path / "missing.csv", "text")


def test_tokenized_to_the_longest_text_or_to_max_length(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    texts = ["hello", "refund my order please", "hi " * 40]
    batch, facts = encode_texts(tokenizer, texts, max_length=16)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert batch["input_ids"].dtype == np.int64 and batch["input_ids"].shape == (3, 16)
    assert facts["truncated_rows"] == 1 and facts["tokens_max"] == 42 and facts["padding"] == "longest"
    short, facts = encode_texts(tokenizer, texts[:2], max_length=16)
    assert short["input_ids"].shape == (2, 6) and facts["truncated_rows"] == 0  # [CLS] 4 words [SEP]
    assert short["attention_mask"].sum(1).tolist() == [3, 6]
    fixed, facts = encode_texts(tokenizer, texts[:2], max_length=16, padding="max_length")
    assert fixed["input_ids"].shape == (2, 16) and facts["width"] == 16
    np.testing.assert_array_equal(fixed["input_ids"][:, :6], short["input_ids"])
    with pytest.raises(ValueError, match="choose one of"):
        encode_texts(tokenizer, texts, max_length=16, padding="bucket")
