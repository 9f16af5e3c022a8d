-- title: Data coverage per day
-- question: What did the archive collect each day, per dataset and market?
-- read: One row per (dataset, market, date) of the newest `days` UTC days of the
--   archive (counted back from the newest date of any dataset): rows, distinct
--   symbols, and the first and last event time. A dataset missing from a day, or a day
--   with fewer rows or a later first / earlier last time than its neighbours, had an
--   outage; use `jex-collector verify` for holes in trade ids and funding events
--   (judged by the funding interval, not by ids; fund records have no such rule).
-- generated: from the dataset registry (collector/datasets); a test checks it.
-- param: days = 7           # the newest N days of the archive (date partitions)
WITH since AS (
    SELECT greatest(
        (SELECT max(date) FROM trades),
        (SELECT max(date) FROM depth),
        (SELECT max(date) FROM klines),
        (SELECT max(date) FROM ticker_24hr),
        (SELECT max(date) FROM ticker_price),
        (SELECT max(date) FROM book_ticker),
        (SELECT max(date) FROM avg_price),
        (SELECT max(date) FROM indices_price),
        (SELECT max(date) FROM funding_rate),
        (SELECT max(date) FROM protection_fund),
        (SELECT max(date) FROM liquidation_orders),
        (SELECT max(date) FROM instruments),
        (SELECT max(date) FROM contract_info)
    ) - $days::INTEGER AS day
)
SELECT * FROM (
    SELECT 'trades' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(time) AS first,
           max(time) AS last
    FROM trades WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'depth' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM depth WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'klines' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(open_time) AS first,
           max(open_time) AS last
    FROM klines WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'ticker_24hr' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM ticker_24hr WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'ticker_price' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM ticker_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'book_ticker' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM book_ticker WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'avg_price' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM avg_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'indices_price' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM indices_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'funding_rate' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(time) AS first,
           max(time) AS last
    FROM funding_rate WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'protection_fund' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(time) AS first,
           max(time) AS last
    FROM protection_fund WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'liquidation_orders' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(time) AS first,
           max(time) AS last
    FROM liquidation_orders WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'instruments' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM instruments WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'contract_info' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(received_at) AS first,
           max(received_at) AS last
    FROM contract_info WHERE date > (SELECT day FROM since) GROUP BY ALL
)
ORDER BY dataset, market, date;
