-- title: Option chain at a moment, by expiry and strike
-- question: What were the calls and puts quoted at, per expiry and strike, at a time?
-- read: One row per (expiry, strike): the newest 24-hour ticker of each option at or
--   before `at` (no older than an hour), calls and puts side by side (bid, ask, last),
--   the underlying's spot price (reference_price) and when the quotes were taken.
--   Call or put comes from the instrument list (option_type).
-- param: at = latest        # a UTC time (2026-11-24T08:00) or `latest` (newest ticker)
WITH moment AS (
    SELECT CASE
        WHEN $at = 'latest'
            THEN (SELECT max(received_at) FROM ticker_24hr WHERE market = 'option')
        ELSE $at::TIMESTAMPTZ
    END AS at
),
quotes AS (
    SELECT t.*
    FROM ticker_24hr AS t, moment AS m
    WHERE t.market = 'option'
      AND t.date BETWEEN CAST(m.at AS DATE) - 1 AND CAST(m.at AS DATE)
      AND t.received_at <= m.at
      AND t.received_at > m.at - INTERVAL 1 HOUR
    QUALIFY row_number() OVER (PARTITION BY t.symbol ORDER BY t.received_at DESC) = 1
),
kinds AS (
    SELECT symbol, arg_max(option_type, received_at) AS option_type
    FROM instruments
    WHERE market = 'option'
    GROUP BY symbol
)
SELECT
    q.expiry_time AS expiry,
    q.strike_price AS strike,
    max(q.bid_price) FILTER (WHERE k.option_type = 'call') AS call_bid,
    max(q.ask_price) FILTER (WHERE k.option_type = 'call') AS call_ask,
    max(q.last_price) FILTER (WHERE k.option_type = 'call') AS call_last,
    max(q.bid_price) FILTER (WHERE k.option_type = 'put') AS put_bid,
    max(q.ask_price) FILTER (WHERE k.option_type = 'put') AS put_ask,
    max(q.last_price) FILTER (WHERE k.option_type = 'put') AS put_last,
    max(q.reference_price) AS underlying,
    max(q.received_at) AS quoted_at
FROM quotes AS q
JOIN kinds AS k ON k.symbol = q.symbol
GROUP BY expiry, strike
ORDER BY expiry, strike;
