-- title: Top of the book per depth snapshot: best bid and ask, mid, spread, top-5 imbalance
--
-- One row per snapshot (market, symbol, received_at, update_id) of `depth`.
-- best_bid/best_ask are the level-0 prices (null when that side was empty), bid_qty_0
-- and ask_qty_0 their quantities; mid = (best_bid + best_ask) / 2, spread = best_ask -
-- best_bid, spread_bps = spread / mid * 1e4. bid_depth and ask_depth sum the quantity on
-- levels 0-4 of each side (0 for an empty side), and imbalance = (bid_depth - ask_depth)
-- / (bid_depth + ask_depth), from -1 (only asks) to 1 (only bids), null for an empty
-- book: the same definition, and the same columns, as the pandas helper book_top.
-- Filter on `date` (and market, symbol) to read only those partitions.
SELECT
    market,
    symbol,
    received_at,
    update_id,
    best_bid,
    best_ask,
    bid_qty_0,
    ask_qty_0,
    (best_bid + best_ask) / 2 AS mid,
    best_ask - best_bid AS spread,
    (best_ask - best_bid) / ((best_bid + best_ask) / 2) * 1e4 AS spread_bps,
    bid_depth,
    ask_depth,
    (bid_depth - ask_depth) / nullif(bid_depth + ask_depth, 0) AS imbalance,
    date
FROM (
    SELECT
        market,
        symbol,
        received_at,
        update_id,
        date,
        max(price) FILTER (WHERE side = 'bid' AND level = 0) AS best_bid,
        max(price) FILTER (WHERE side = 'ask' AND level = 0) AS best_ask,
        max(qty) FILTER (WHERE side = 'bid' AND level = 0) AS bid_qty_0,
        max(qty) FILTER (WHERE side = 'ask' AND level = 0) AS ask_qty_0,
        coalesce(sum(qty) FILTER (WHERE side = 'bid' AND level < 5), 0) AS bid_depth,
        coalesce(sum(qty) FILTER (WHERE side = 'ask' AND level < 5), 0) AS ask_depth
    FROM depth
    GROUP BY market, symbol, received_at, update_id, date
)
