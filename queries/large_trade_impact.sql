-- title: Price impact of large trades
-- question: Does the price keep moving in the direction of a large trade afterwards?
-- read: One row per size class (`large`: qty at or above the `quantile` of the window's
--   sizes; `other`) and aggressor side (buy when the buyer was the taker): trades,
--   mean size, and the mean move of the trade price to the first trade at least
--   `horizon_s` seconds later, in basis points signed by the aggressor (positive: the
--   price went on in the trade's direction). Needs trades with a side (an API key).
-- param: market = contract
-- param: symbol = BTCUSDT
-- param: days = 1           # the newest N days of the archive (date partitions)
-- param: quantile = 0.99    # size quantile above which a trade is large
-- param: horizon_s = 60     # seconds after the trade
WITH window_trades AS (
    SELECT time, price, qty, is_buyer_maker
    FROM trades
    WHERE market = $market
      AND symbol = $symbol
      AND date > (SELECT max(date) FROM trades WHERE market = $market) - $days::INTEGER
      AND is_buyer_maker IS NOT NULL
),
cut AS (
    SELECT quantile_cont(qty, $quantile::DOUBLE) AS large_qty FROM window_trades
),
moved AS (
    SELECT
        t.qty,
        CASE WHEN t.is_buyer_maker THEN 'sell' ELSE 'buy' END AS aggressor,
        (later.price / t.price - 1) * 1e4 * CASE WHEN t.is_buyer_maker THEN -1 ELSE 1 END
            AS signed_move_bps
    FROM window_trades AS t
    ASOF JOIN window_trades AS later
        ON later.time >= t.time + to_seconds($horizon_s::INTEGER)
)
SELECT
    CASE WHEN qty >= (SELECT large_qty FROM cut) THEN 'large' ELSE 'other' END AS size_class,
    aggressor,
    count(*) AS trades,
    avg(qty) AS mean_qty,
    avg(signed_move_bps) AS mean_signed_move_bps
FROM moved
GROUP BY size_class, aggressor
ORDER BY size_class, aggressor;
