-- key_ips: the addresses one key was used from, with first and last seen.
-- Answers: from where is this key used, how much from each address, and since when. One row
-- per client address, busiest first; duplicates are counted once
-- (FINAL). Read from the key's raw events: a per-address rollup is as large as the events
-- at typical keys' density, and the raw read is bounded by the key's own traffic.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 7d          start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
SELECT
    replaceOne(toString(client_ip), '::ffff:', '') AS ip,
    if(startsWith(toString(network), '::ffff:'),
       concat(replaceOne(toString(network), '::ffff:', ''), '/24'),
       concat(toString(network), '/48')) AS network,
    count() AS requests,
    countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')) AS denials,
    countIf(outcome = 'error' OR status >= 500) AS errors,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen,
    arraySlice(arraySort(groupUniqArray(user_agent)), 1, 5) AS user_agents
FROM usage_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY client_ip, usage_events.network
ORDER BY requests DESC, ip
LIMIT {limit:UInt32}
SETTINGS do_not_merge_across_partitions_select_final = 1
