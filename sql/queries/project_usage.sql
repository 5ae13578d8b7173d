-- project_usage: requests, errors, denials and active keys per project in a window.
-- Answers: how much each project uses its keys and how much of it fails or is refused. Counts
-- whole hours, from the one containing `since` up to `until` (the whole UTC days among them from
-- usage_daily, the others from usage_hourly, exact at any moment; duplicates counted once). One
-- row per project, busiest first.
-- Parameters:
--   since    DateTime = 24h         start of the window (rounded down to the hour)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project ('' = every project)
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
    project_id,
    uniqExact(key_id) AS active_keys,
    sum(requests) AS total_requests,
    sum(errors) AS total_errors,
    sum(denials) AS total_denials,
    round(total_errors / total_requests, 4) AS error_rate,
    round(total_denials / total_requests, 4) AS denial_rate,
    sum(request_bytes) AS total_request_bytes,
    sum(response_bytes) AS total_response_bytes
FROM
(
    SELECT key_id, project_id, requests, errors, denials, request_bytes, response_bytes
    FROM usage_daily
    WHERE day >= days_from
      AND day < days_to
      AND ({project:String} = '' OR project_id = {project:String})
    UNION ALL
    SELECT key_id, project_id, requests, errors, denials, request_bytes, response_bytes
    FROM key_usage_hourly FINAL
    WHERE hour >= from_hour
      AND hour < {until:DateTime64(3, 'UTC')}
      AND hour < live_from
      AND (toDate(hour) < days_from OR toDate(hour) >= days_to)
      AND toDate(hour) >= toDate(from_hour, 'UTC')  -- ranges on the sort key's leading toDate(hour)
      AND toDate(hour) <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
      AND ({project:String} = '' OR project_id = {project:String})
    UNION ALL
    SELECT key_id, project_id, sum(requests), sum(errors), sum(denials), sum(request_bytes), sum(response_bytes)
    FROM key_usage_minute FINAL
    WHERE minute >= greatest(live_from, from_hour)
      AND toStartOfHour(minute) < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
    GROUP BY key_id, project_id, toStartOfHour(minute)
)
GROUP BY project_id
HAVING total_requests > 0
ORDER BY total_requests DESC, project_id
SETTINGS optimize_time_filter_with_preimage = 0
