-- key_routes: what one key was used for: requests per service, method and route.
-- Answers: which endpoints does this key call, how often, how fast, and how often it fails or
-- is refused. One row per service, method and route template, busiest first.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 7d          start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
SELECT
    service,
    method,
    route,
    count() AS requests,
    countIf(outcome = 'error' OR status >= 500) AS errors,
    countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')) AS denials,
    round(quantileExact(0.5)(latency_ms), 2) AS p50_latency_ms,
    round(quantileExact(0.95)(latency_ms), 2) AS p95_latency_ms,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM usage_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY service, method, route
ORDER BY requests DESC, service, route, method
LIMIT {limit:UInt32}
SETTINGS do_not_merge_across_partitions_select_final = 1
