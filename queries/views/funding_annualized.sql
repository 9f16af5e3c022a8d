-- title: Funding events with the interval they cover and the rate annualized
--
-- One row per funding event of `funding_rate`. funding_rate is paid once per funding
-- interval, so annualized_rate = funding_rate * (365 days / interval_ms), and
-- annualized_pct is the same in percent. interval_ms is the actual spacing of this
-- contract's events: the time since the previous archived event divided by the
-- difference of their ids (funding ids count the events of a contract one by one, so a
-- hole in the archive does not stretch the interval); the first event takes the
-- spacing to the next one, and a contract with a single event has none (null).
-- contract_info's funding_interval_ms is not used: it is the interval announced at
-- the moment it was polled, and says nothing about history before the collector ran
-- or after the exchange changed it. funding_rate_day is the exchange's own daily
-- figure (rate * events per day), kept for comparison.
SELECT
    market,
    symbol,
    id,
    time,
    funding_rate,
    funding_rate_day,
    interval_ms,
    funding_rate * (365 * 86400000.0 / interval_ms) AS annualized_rate,
    funding_rate * (365 * 86400000.0 / interval_ms) * 100 AS annualized_pct,
    date
FROM (
    SELECT
        *,
        coalesce(
            (epoch_ms(time) - epoch_ms(lag(time) OVER w)) / (id - lag(id) OVER w),
            (epoch_ms(lead(time) OVER w) - epoch_ms(time)) / (lead(id) OVER w - id)
        ) AS interval_ms
    FROM funding_rate
    WINDOW w AS (PARTITION BY market, symbol ORDER BY id)
)
