"""What every parser shares: :class:`Parsed` (the rows of one dataset and the records set
aside), :func:`build_rows` (records in, rows checked against the dataset's Arrow types
out), the fields each endpoint documents (:data:`DOCUMENTED`), and a few helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from collector import datasets
from collector.errors import PayloadError
from collector.exchange.parsers.bounds import INT64_MAX, symbol_name

#: The fields the API reference documents for each endpoint's objects
#: (``shared/jex-api.md``), plus spellings the parsers also read.
DOCUMENTED: dict[str, frozenset[str]] = {
    name: frozenset(names.split())
    for name, names in {
        "depth": "lastUpdateId bids asks",
        "trades": "price qty time",
        "historicalTrades": "id price qty time buyerMaker isBuyerMaker",
        "avgPrice": "mins price",
        "ticker/24hr": "symbol priceChange priceChangePercent weightedAvgPrice lastPrice "
        "bidPrice bidQty askPrice askQty openPrice highPrice lowPrice volume quoteVolume "
        "openTime closeTime exertionTime performPrice referencePrice exertionPrice",
        "ticker/price": "symbol price",
        "ticker/bookTicker": "symbol bidPrice bidQty askPrice askQty",
        "ticker/indicesPrice": "symbol price indexPrice markPrice",
        "historyRate": "id fundingRate fundingRateDay symbol date",
        "protectionFund": "id createdDate symbol insuranceFund",
        "liquidationOrder": "symbol orderId updateTime side origQty executedQty price "
        "executedPrice status time reject type",
        "exchangeInfo": "timezone serverTime rateLimits spotSymbols optionSymbols contractSymbols",
        "exchangeInfo symbols": "symbol status baseAsset baseAssetPrecision quoteAsset "
        "quotePrecision orderTypes icebergAllowed filters",
        "optionInfo": "symbol status type exertionTime optionDesc canRelease releaseOption",
        "contractInfo": "symbol fundingRate fundingInterval nextFundingTime "
        "predictedFundingRate turnover24 markMethod markPrice lastPrice autoDeleveraging",
    }.items()
}
#: Characters of an undocumented field name kept in a report.
FIELD_NAME_MAX = 64


@dataclass
class Parsed:
    """Rows of ``dataset``, the records that could not be read (with why), and the
    undocumented fields seen, as (endpoint, field) pairs.

    ``outside``: records set aside because their id lies outside the page's run (see
    :func:`collector.collect.intake.set_aside_outliers`); a paged job must not stop at them.
    """

    dataset: str
    table: pa.Table
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    unknown_fields: set[tuple[str, str]] = field(default_factory=set)
    outside: list[tuple[Any, str]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)


def undocumented(record: Any, endpoint: str) -> set[tuple[str, str]]:
    """(endpoint, field) for each field of ``record`` that ``endpoint`` does not document."""
    if not isinstance(record, dict):
        return set()
    known = DOCUMENTED[endpoint]
    return {(endpoint, str(name)[:FIELD_NAME_MAX]) for name in record if name not in known}


def expect_shape(payload: Any, kind: type, endpoint: str) -> Any:
    if not isinstance(payload, kind):
        raise PayloadError(
            f"expected a JSON {'list' if kind is list else 'object'}, got {type(payload).__name__}",
            endpoint=endpoint,
        )
    return payload


def build_rows(
    dataset: str,
    records: Iterable[Any],
    read: Callable[[Any], Iterable[Mapping[str, Any]]],
    endpoint: str | None = None,
) -> Parsed:
    """Apply ``read`` to each record (it yields rows); set aside the records it rejects.

    With ``endpoint``, the records' fields are checked against :data:`DOCUMENTED`.
    """
    schema = datasets.get(dataset).schema
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    appends = [(name, values.append) for name, values in columns.items()]
    ranges = _integer_ranges(dataset)
    rejected: list[tuple[Any, str]] = []
    unknown: set[tuple[str, str]] = set()
    for record in records:
        if endpoint is not None:
            unknown |= undocumented(record, endpoint)
        try:
            rows = list(read(record))
            for row in rows:
                _check_ranges(row, ranges)
        except (
            KeyError,
            TypeError,
            ValueError,
            IndexError,
            AttributeError,
            OverflowError,
        ) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            rejected.append((record, reason))
            continue
        for row in rows:
            for name, append in appends:
                append(row.get(name))
    table = pa.table(
        {name: pa.array(values, type=schema.field(name).type) for name, values in columns.items()},
        schema=schema,
    )
    return Parsed(dataset, table, rejected, unknown)


@functools.cache
def _integer_ranges(dataset: str) -> dict[str, tuple[int, int]]:
    """The values each integer (and timestamp) column of ``dataset`` can hold."""
    schema = datasets.get(dataset).schema
    ranges = {}
    for schema_field in schema:
        kind = schema_field.type
        if pa.types.is_timestamp(kind):
            ranges[schema_field.name] = (-(2**63), INT64_MAX)
        elif pa.types.is_integer(kind):
            bits = kind.bit_width
            if pa.types.is_signed_integer(kind):
                ranges[schema_field.name] = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            else:
                ranges[schema_field.name] = (0, 2**bits - 1)
    return ranges


def _check_ranges(row: Mapping[str, Any], ranges: Mapping[str, tuple[int, int]]) -> None:
    for name, (low, high) in ranges.items():
        value = row.get(name)
        if isinstance(value, int) and not low <= value <= high:
            raise ValueError(f"{name} out of the archive's range: {str(value)[:40]}")


def one_or_many(payload: Any, endpoint: str) -> list[Any]:
    if isinstance(payload, dict):
        return [payload]
    return list(expect_shape(payload, list, endpoint))


def record_symbol(record: Mapping[str, Any], requested: str | None) -> str:
    """The record's symbol; a single-symbol response may omit it (contract bookTicker)."""
    if "symbol" in record:
        name = symbol_name(record["symbol"])
        if requested is not None and name != requested:
            raise ValueError(f"asked for {requested}, got {name}")
        return name
    if requested is None:
        raise KeyError("symbol")
    return requested


def dedupe_sorted(table: pa.Table, key: str) -> pa.Table:
    """Sort by ``key`` and keep the first row of each key value."""
    if table.num_rows == 0:
        return table
    table = table.sort_by([(key, "ascending")])
    values = table.column(key).to_pylist()
    keep = [i for i, value in enumerate(values) if i == 0 or value != values[i - 1]]
    return table if len(keep) == len(values) else table.take(keep)
