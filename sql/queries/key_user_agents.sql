-- key_user_agents: the client software that used one key.
-- Answers: which programs send this key (a new user agent next to the usual one often means a
-- copied key). One row per user agent, busiest first, with its addresses and first/last seen.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 7d          start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
SELECT
    user_agent,
    count() AS requests,
    uniqExact(client_ip) AS ips,
    countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')) AS denials,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM usage_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY user_agent
ORDER BY requests DESC, user_agent
LIMIT {limit:UInt32}
SETTINGS do_not_merge_across_partitions_select_final = 1
