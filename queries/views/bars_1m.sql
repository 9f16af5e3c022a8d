-- title: One-minute OHLCV and VWAP bars from trades
--
-- One row per (market, symbol, minute) that had at least one trade: minutes without
-- trades have no row (the pandas helper fills them; here a gap is a gap). minute is
-- the bar's start (UTC, whatever the session's TimeZone). open and close are the
-- prices of the first and last trade by (time, trade_id); volume is the base
-- quantity, quote_volume the sum of price * qty, vwap = quote_volume / volume,
-- buy_volume the quantity bought by takers (is_buyer_maker false; null side counts
-- as unknown and is left out). Filter on `date` to read only those partitions.
SELECT
    market,
    symbol,
    time_bucket(INTERVAL 1 MINUTE, time) AS minute,
    arg_min(price, (time, trade_id)) AS open,
    max(price) AS high,
    min(price) AS low,
    arg_max(price, (time, trade_id)) AS close,
    sum(qty) AS volume,
    sum(price * qty) AS quote_volume,
    sum(price * qty) / sum(qty) AS vwap,
    coalesce(sum(qty) FILTER (WHERE NOT is_buyer_maker), 0) AS buy_volume,
    count(*) AS trade_count,
    date
FROM trades
GROUP BY market, symbol, minute, date
