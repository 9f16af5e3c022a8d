-- title: Futures basis per snapshot: mark and last price minus index, absolute and in bps
--
-- One row per `indices_price` snapshot (market, symbol, received_at).
-- basis = mark_price - index_price and basis_bps = basis / index_price * 1e4 (positive
-- when the contract trades above its index); last_basis and last_basis_bps are the
-- same for the last traded price. Filter on `date` to read only those partitions.
SELECT
    market,
    symbol,
    received_at,
    index_price,
    mark_price,
    last_price,
    mark_price - index_price AS basis,
    (mark_price - index_price) / index_price * 1e4 AS basis_bps,
    last_price - index_price AS last_basis,
    (last_price - index_price) / index_price * 1e4 AS last_basis_bps,
    date
FROM indices_price
