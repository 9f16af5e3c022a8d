-- title: Cross-market basis: contract versus spot, per hour
-- question: How far above (or below) the spot price does each contract trade?
-- read: One row per (contract, UTC hour): the spot symbol it was matched with, the
--   minutes in which both traded, and the mean, min and max of (contract close - spot
--   close) / spot close in basis points over those minutes (bars_1m closes).
--   Contracts are matched with spot symbols by the instrument lists' base and quote
--   assets (BTC/USDT), not by name: on JEX and in the simulator both are named
--   BTCUSDT, and the match stays right if a contract is named otherwise
--   (BTCUSDT_PERP). A contract without a spot pair has no rows.
-- param: days = 1           # the newest N days of the archive (date partitions)
WITH assets AS (
    SELECT market, symbol,
           arg_max(base_asset, received_at) AS base_asset,
           arg_max(quote_asset, received_at) AS quote_asset
    FROM instruments
    WHERE market IN ('spot', 'contract')
    GROUP BY market, symbol
),
pairs AS (
    SELECT c.symbol AS contract_symbol, s.symbol AS spot_symbol
    FROM assets AS c
    JOIN assets AS s
        ON s.market = 'spot' AND s.base_asset = c.base_asset
       AND s.quote_asset = c.quote_asset
    WHERE c.market = 'contract'
),
since AS (
    SELECT max(date) - $days::INTEGER AS day FROM trades WHERE market = 'contract'
),
minutes AS (
    SELECT p.contract_symbol, p.spot_symbol, c.minute,
           (c.close - s.close) / s.close * 1e4 AS basis_bps
    FROM pairs AS p
    JOIN bars_1m AS c
        ON c.market = 'contract' AND c.symbol = p.contract_symbol
       AND c.date > (SELECT day FROM since)
    JOIN bars_1m AS s
        ON s.market = 'spot' AND s.symbol = p.spot_symbol AND s.minute = c.minute
       AND s.date > (SELECT day FROM since)
)
SELECT
    contract_symbol,
    spot_symbol,
    time_bucket(INTERVAL 1 HOUR, minute) AS hour,
    count(*) AS minutes,
    avg(basis_bps) AS mean_basis_bps,
    min(basis_bps) AS min_basis_bps,
    max(basis_bps) AS max_basis_bps
FROM minutes
GROUP BY ALL
ORDER BY contract_symbol, hour;
