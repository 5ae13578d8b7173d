-- project_usage: requests, errors, denials and active keys per project in a window.
-- Answers: how much each project uses its keys and how much of it fails or is refused. Counts
-- whole hours, from the one containing `since` up to `until` (usage_hourly, exact at any moment;
-- duplicates counted once). One row per project, busiest first.
-- Parameters:
--   since    DateTime = 24h         start of the window (rounded down to the hour)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project ('' = every project)
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
FROM usage_hourly
WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')})
  AND hour < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY project_id
HAVING total_requests > 0
ORDER BY total_requests DESC, project_id
