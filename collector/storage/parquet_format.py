"""How the archive's Parquet files are encoded: the one place for the writer and compaction.

Readers need none of this: pyarrow and DuckDB read every encoding used here, and files
written before (zstd with pyarrow's defaults) stay readable next to newer ones. It only
decides how many bytes a row costs; ``bench/storage.py`` measures each choice on a
month of simulated trades, depth and klines (``bench/README.md``), briefly:

* integers and times: ``DELTA_BINARY_PACKED``. Ids count up and times are sorted
  within a symbol, so the deltas are small: a trade's id costs 0.01 byte instead of
  2.8, its time 1.5 bytes instead of 4 (dictionary, pyarrow's default).
* strings (market, symbol, side, interval): dictionary, a few bytes per row group.
* floats: what suits their values. Trade prices and klines are best ``PLAIN`` (each
  value is close to the previous one, which zstd finds; a dictionary of thousands of
  distinct prices costs more); depth prices sit on an evenly spaced ladder, where
  ``BYTE_STREAM_SPLIT`` (the bytes of all values grouped by position) lets zstd see
  the few bytes that change; trade quantities repeat (round lots) and are best as a
  dictionary.
* zstd level 19 on float columns (their bytes are the hard part; about 10% smaller than
  level 3 and still decompressed as fast), level 9 elsewhere, in compacted files; the
  writer's flushes, rewritten by compaction within a day, use level 3.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from collector import datasets

#: zstd level of float columns, and of every other column, in compacted files.
FLOAT_LEVEL = 19
LEVEL = 9
#: zstd level of the writer's flushes (every column).
FLUSH_LEVEL = 3

DICTIONARY = "DICTIONARY"
#: Float columns that are not dictionary-encoded (the default for floats), per dataset.
FLOAT_ENCODINGS: dict[str, dict[str, str]] = {
    "trades": {"price": "PLAIN"},
    "depth": {"price": "BYTE_STREAM_SPLIT", "qty": "PLAIN"},
    "klines": {
        name: "PLAIN"
        for name in (
            "open",
            "high",
            "low",
            "close",
            "volume",
            "quote_volume",
            "taker_buy_volume",
            "taker_buy_quote_volume",
        )
    },
}


def column_encodings(dataset: str) -> dict[str, str]:
    """Each column's encoding: a Parquet encoding name or ``DICTIONARY``."""
    spec = datasets.get(dataset)
    floats = FLOAT_ENCODINGS.get(dataset, {})
    encodings: dict[str, str] = {}
    for column in spec.columns:
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_timestamp(kind):
            encodings[column.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(kind):
            encodings[column.name] = floats.get(column.name, DICTIONARY)
        else:  # strings, booleans
            encodings[column.name] = DICTIONARY
    return encodings


def write_options(dataset: str, *, compacted: bool = True) -> dict[str, Any]:
    """Keyword arguments for ``pq.write_table``/``pq.ParquetWriter`` for ``dataset``'s rows.

    ``compacted=False`` (the writer's flushes) keeps the encodings but uses zstd level
    ``FLUSH_LEVEL``: those files live until the day is compacted, and level 19 would
    make each flush several times slower for bytes that are soon rewritten.
    """
    spec = datasets.get(dataset)
    encodings = column_encodings(dataset)
    levels = {c.name: FLOAT_LEVEL if pa.types.is_floating(c.type) else LEVEL for c in spec.columns}
    return {
        "compression": "zstd",
        "compression_level": levels if compacted else FLUSH_LEVEL,
        # pyarrow takes the encodings of columns without a dictionary only.
        "use_dictionary": [name for name, enc in encodings.items() if enc == DICTIONARY],
        "column_encoding": {name: enc for name, enc in encodings.items() if enc != DICTIONARY},
    }
