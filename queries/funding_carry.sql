-- title: Funding carry per contract
-- question: What did holding each contract long cost (or earn) in funding lately?
-- read: One row per contract: funding events in the window, first and last event,
--   carry = sum of the rates (the share of notional a long paid over the window; a
--   short received it; negative means longs were paid), the mean and latest rate
--   annualized from the actual interval (funding_annualized view), in percent.
-- param: days = 7           # the newest N days of the archive (date partitions)
SELECT
    market,
    symbol,
    count(*) AS events,
    min(time) AS first_event,
    max(time) AS last_event,
    sum(funding_rate) AS carry,
    sum(funding_rate) * 100 AS carry_pct,
    avg(annualized_pct) AS mean_annualized_pct,
    arg_max(annualized_pct, time) AS latest_annualized_pct
FROM funding_annualized
WHERE date > (SELECT max(date) FROM funding_rate) - $days::INTEGER
GROUP BY market, symbol
ORDER BY market, symbol;
