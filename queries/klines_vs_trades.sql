-- title: Exchange klines versus bars rebuilt from the archived trades
-- question: Does the archive hold every trade the exchange's own 1m klines count?
-- read: One row per symbol: minutes compared (1m klines inside the span of archived
--   trades), minutes whose trade count differs, minutes with trades on the exchange
--   but none in the archive, and the largest relative volume difference. Zeros mean
--   the trades are complete over that span; differences point at holes (run
--   `jex-collector verify`) or at trades collected without an API key.
-- param: market = spot
-- param: days = 1           # the newest N days of the archive (date partitions)
WITH since AS (
    SELECT max(date) - $days::INTEGER AS day FROM trades WHERE market = $market
),
span AS (
    SELECT symbol, min(minute) AS first_minute, max(minute) AS last_minute
    FROM bars_1m
    WHERE market = $market AND date > (SELECT day FROM since)
    GROUP BY symbol
),
compared AS (
    SELECT k.symbol, k.open_time, k.trade_count AS exchange_trades,
           k.volume AS exchange_volume,
           coalesce(b.trade_count, 0) AS archive_trades, coalesce(b.volume, 0) AS archive_volume
    FROM klines AS k
    JOIN span AS s
        ON s.symbol = k.symbol
       -- the first and last minute are only partly archived
       AND k.open_time > s.first_minute AND k.open_time < s.last_minute
    LEFT JOIN bars_1m AS b
        ON b.market = k.market AND b.symbol = k.symbol AND b.minute = k.open_time
       AND b.date > (SELECT day FROM since)
    WHERE k.market = $market AND k.interval = '1m' AND k.date > (SELECT day FROM since)
)
SELECT
    symbol,
    count(*) AS minutes,
    count(*) FILTER (WHERE exchange_trades <> archive_trades) AS count_differs,
    count(*) FILTER (WHERE exchange_trades > 0 AND archive_trades = 0) AS missing_minutes,
    max(abs(exchange_volume - archive_volume) / nullif(exchange_volume, 0))
        AS max_volume_difference
FROM compared
GROUP BY symbol
ORDER BY symbol;
