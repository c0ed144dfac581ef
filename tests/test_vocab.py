"""Global label vocabularies and codes (bioscan_stream/vocab.py), checked against pandas Categorical codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bioscan_stream.constants import LABEL_COLUMNS
from bioscan_stream.vocab import build_vocabularies, encode_labels, load_vocabularies, save_vocabularies

SPECIES = [
    "Megaselia lucifrons",
    None,
    "Megaselia Malaise4749",
    "aedes x",
    "Ännchen b",
    "Zeta y",
    "Megaselia lucifrons",
]
SPLIT = ["train", "pretrain", "train", "test", "train", "pretrain", "test"]


def _table() -> pa.Table:
    return pa.table({"species": SPECIES, "order": ["Diptera"] * 6 + [None], "split": SPLIT, "other": list("abcdefg")})


def test_vocabulary_is_sorted_global_and_skips_missing() -> None:
    vocab = build_vocabularies(_table())
    assert set(vocab) == {"species", "order"} and set(vocab) <= set(LABEL_COLUMNS)
    assert vocab["species"] == sorted(s for s in set(SPECIES) if s is not None)
    assert vocab["order"] == ["Diptera"]


def test_codes_equal_pandas_categorical_codes() -> None:
    pd = pytest.importorskip("pandas")
    vocab = build_vocabularies(_table())["species"]
    expected = pd.Series(SPECIES, dtype="category").cat.codes.to_numpy()
    codes = encode_labels(_table()["species"], vocab)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, expected)
    assert list(pd.Series(SPECIES, dtype="category").cat.categories) == vocab


def test_codes_of_a_split_are_the_global_codes() -> None:
    table = _table()
    vocab = build_vocabularies(table)["species"]
    train = table.filter(pc.equal(table["split"], "train"))
    full = encode_labels(table["species"], vocab)
    np.testing.assert_array_equal(encode_labels(train["species"], vocab), full[np.array(SPLIT) == "train"])


def test_unknown_and_empty_values_are_missing() -> None:
    codes = encode_labels(["Zeta y", "", None, "never seen"], ["Zeta y"])
    np.testing.assert_array_equal(codes, [0, -1, -1, -1])
    assert build_vocabularies(pa.table({"genus": ["", "B", None, "A"]}))["genus"] == ["A", "B"]


def test_save_and_load(tmp_path: Path) -> None:
    vocab = build_vocabularies(_table())
    path = save_vocabularies(vocab, tmp_path / "v" / "vocab.json")
    assert load_vocabularies(path) == vocab
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a vocabulary file"):
        load_vocabularies(path)
