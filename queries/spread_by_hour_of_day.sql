-- title: Spread and depth by hour of day
-- question: When in the (UTC) day is the book tight and deep, and when thin?
-- read: One row per UTC hour of day (0-23) with snapshots: snapshots, mean, median and
--   90th-percentile spread in basis points, mean quantity on levels 0-4 of each side,
--   and mean top-5 imbalance (positive: more bids). From the depth_top view.
-- param: market = spot
-- param: symbol = BTCUSDT
-- param: days = 7           # the newest N days of the archive (date partitions)
SELECT
    extract(HOUR FROM received_at AT TIME ZONE 'UTC') AS hour_of_day,
    count(*) AS snapshots,
    avg(spread_bps) AS mean_spread_bps,
    median(spread_bps) AS median_spread_bps,
    quantile_cont(spread_bps, 0.9) AS p90_spread_bps,
    avg(bid_depth) AS mean_bid_depth,
    avg(ask_depth) AS mean_ask_depth,
    avg(imbalance) AS mean_imbalance
FROM depth_top
WHERE market = $market
  AND symbol = $symbol
  AND date > (SELECT max(date) FROM depth WHERE market = $market) - $days::INTEGER
GROUP BY hour_of_day
ORDER BY hour_of_day;
