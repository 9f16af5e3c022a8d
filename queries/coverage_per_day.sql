-- title: Data coverage per day
-- question: What did the archive collect each day, per dataset and market?
-- read: One row per (dataset, market, date) of the newest `days` UTC days of the
--   archive (counted back from the newest date of any dataset): rows, distinct
--   symbols, and the first and last event time. A dataset missing from a day, or a day
--   with fewer rows or a later first / earlier last time than its neighbours, had an
--   outage; use `jex-collector verify` for holes in trade ids and funding events
--   (judged by the funding interval, not by ids; fund records have no such rule).
-- param: days = 7           # the newest N days of the archive (date partitions)
WITH since AS (
    SELECT greatest(
        (SELECT max(date) FROM trades), (SELECT max(date) FROM depth),
        (SELECT max(date) FROM klines), (SELECT max(date) FROM ticker_24hr),
        (SELECT max(date) FROM ticker_price), (SELECT max(date) FROM book_ticker),
        (SELECT max(date) FROM avg_price), (SELECT max(date) FROM indices_price),
        (SELECT max(date) FROM funding_rate), (SELECT max(date) FROM protection_fund),
        (SELECT max(date) FROM instruments), (SELECT max(date) FROM contract_info)
    ) - $days::INTEGER AS day
)
SELECT * FROM (
    SELECT 'trades' AS dataset, market, date, count(*) AS rows,
           count(DISTINCT symbol) AS symbols, min(time) AS first, max(time) AS last
    FROM trades WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'depth', market, date, count(*), count(DISTINCT symbol), min(received_at),
           max(received_at)
    FROM depth WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'klines', market, date, count(*), count(DISTINCT symbol), min(open_time),
           max(open_time)
    FROM klines WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'ticker_24hr', market, date, count(*), count(DISTINCT symbol), min(received_at),
           max(received_at)
    FROM ticker_24hr WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'ticker_price', market, date, count(*), count(DISTINCT symbol),
           min(received_at), max(received_at)
    FROM ticker_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'book_ticker', market, date, count(*), count(DISTINCT symbol), min(received_at),
           max(received_at)
    FROM book_ticker WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'avg_price', market, date, count(*), count(DISTINCT symbol), min(received_at),
           max(received_at)
    FROM avg_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'indices_price', market, date, count(*), count(DISTINCT symbol),
           min(received_at), max(received_at)
    FROM indices_price WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'funding_rate', market, date, count(*), count(DISTINCT symbol), min(time),
           max(time)
    FROM funding_rate WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'protection_fund', market, date, count(*), count(DISTINCT symbol), min(time),
           max(time)
    FROM protection_fund WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'instruments', market, date, count(*), count(DISTINCT symbol), min(received_at),
           max(received_at)
    FROM instruments WHERE date > (SELECT day FROM since) GROUP BY ALL
    UNION ALL
    SELECT 'contract_info', market, date, count(*), count(DISTINCT symbol),
           min(received_at), max(received_at)
    FROM contract_info WHERE date > (SELECT day FROM since) GROUP BY ALL
)
ORDER BY dataset, market, date;
