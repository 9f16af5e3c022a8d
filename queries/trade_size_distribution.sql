-- title: Trade-size distribution
-- question: Are trades mostly small, and how much of the volume do the big ones carry?
-- read: One row per size class, by powers of ten of the quantity (size_from <= qty <
--   size_to, base asset): trades, share of trades and share of volume (both 0-1),
--   and the mean size. Read down the volume share to see where the volume is.
-- param: market = spot
-- param: symbol = BTCUSDT
-- param: days = 1           # the newest N days of the archive (date partitions)
WITH sized AS (
    SELECT qty, floor(log10(qty)) AS magnitude
    FROM trades
    WHERE market = $market
      AND symbol = $symbol
      AND date > (SELECT max(date) FROM trades WHERE market = $market) - $days::INTEGER
      AND qty > 0
)
SELECT
    pow(10, magnitude) AS size_from,
    pow(10, magnitude + 1) AS size_to,
    count(*) AS trades,
    count(*) / sum(count(*)) OVER () AS trade_share,
    sum(qty) / sum(sum(qty)) OVER () AS volume_share,
    avg(qty) AS mean_qty
FROM sized
GROUP BY magnitude
ORDER BY magnitude;
