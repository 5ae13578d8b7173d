-- top_keys: the busiest keys in a window, by requests, errors or denials.
-- Answers: which keys carry the traffic, fail the most, or are refused the most. Counts whole
-- hours: every hour from the one containing `since` up to `until` (the whole UTC days among them
-- from usage_daily, the other hours as usage_hourly has them, exact at any moment, so a re-sent or duplicated
-- event is counted once). One row per key, highest first; keys with none of the chosen count are
-- left out.
-- Parameters:
--   since    DateTime = 24h                   start of the window (rounded down to the hour)
--   until    DateTime = now                   end of the window (exclusive)
--   project  Project = ''                     only this project's keys ('' = every project)
--   by       Enum(requests|errors|denials) = requests  what to rank by
--   limit    UInt32[1..10000] = 20            rows to return
WITH
    toStartOfHour({since:DateTime64(3, 'UTC')}) AS from_hour,
    -- the current and previous hour are counted live from the per-minute rows (as usage_hourly
    -- does), older hours come from the hourly rollup, and whole UTC days older than that from the
    -- daily rollup
    toDateTime(toStartOfHour(now()) - INTERVAL 1 HOUR, 'UTC') AS live_from,
    toDate(from_hour + INTERVAL 1 DAY - INTERVAL 1 SECOND, 'UTC') AS days_from,
    toDate(least(toDateTime(toStartOfHour({until:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND), 'UTC') + INTERVAL 1 HOUR,
                 live_from), 'UTC') AS days_to
SELECT
    key_id,
    project_id,
    sum(requests) AS total_requests,
    sum(errors) AS total_errors,
    sum(denials) AS total_denials,
    round(total_errors / total_requests, 4) AS error_rate,
    round(total_denials / total_requests, 4) AS denial_rate,
    toUInt64(sum(hours)) AS active_hours
FROM
(
    SELECT key_id, project_id, requests, errors, denials, active_hours AS hours
    FROM usage_daily
    WHERE day >= days_from
      AND day < days_to
      AND ({project:String} = '' OR project_id = {project:String})
    UNION ALL
    SELECT key_id, project_id, requests, errors, denials, 1 AS hours
    FROM key_usage_hourly FINAL
    WHERE hour >= from_hour
      AND hour < {until:DateTime64(3, 'UTC')}
      AND hour < live_from
      AND (toDate(hour) < days_from OR toDate(hour) >= days_to)
      AND toDate(hour) >= toDate(from_hour, 'UTC')  -- ranges on the sort key's leading toDate(hour)
      AND toDate(hour) <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
      AND ({project:String} = '' OR project_id = {project:String})
    UNION ALL
    SELECT key_id, project_id, sum(requests), sum(errors), sum(denials), 1
    FROM key_usage_minute FINAL
    WHERE minute >= greatest(live_from, from_hour)
      AND toStartOfHour(minute) < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
    GROUP BY key_id, project_id, toStartOfHour(minute)
)
GROUP BY key_id, project_id
HAVING multiIf({by:String} = 'errors', total_errors, {by:String} = 'denials', total_denials, total_requests) > 0
ORDER BY multiIf({by:String} = 'errors', total_errors, {by:String} = 'denials', total_denials, total_requests) DESC, key_id
LIMIT {limit:UInt32}
SETTINGS optimize_time_filter_with_preimage = 0
