-- title: Hourly VWAP and volume
-- question: At what average price, and how much, did one symbol trade in each hour?
-- read: One row per UTC hour with trades, oldest first: vwap (volume-weighted average
--   price), volume (base asset), quote_volume, trades, and the hour's open and close.
--   Built on the bars_1m view; hours without trades have no row.
-- param: market = spot      # spot, option or contract
-- param: symbol = BTCUSDT
-- param: days = 1           # the newest N days of the archive (date partitions)
SELECT
    time_bucket(INTERVAL 1 HOUR, minute) AS hour,
    sum(quote_volume) / sum(volume) AS vwap,
    sum(volume) AS volume,
    sum(quote_volume) AS quote_volume,
    sum(trade_count) AS trades,
    arg_min(open, minute) AS open,
    arg_max(close, minute) AS close
FROM bars_1m
WHERE market = $market
  AND symbol = $symbol
  AND date > (SELECT max(date) FROM trades WHERE market = $market) - $days::INTEGER
GROUP BY hour
ORDER BY hour;
