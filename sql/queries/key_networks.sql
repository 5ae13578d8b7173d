-- key_networks: the networks (IPv4 /24, IPv6 /48) one key was used from, with first and last seen.
-- Answers: from how many places is this key used, and which network appeared when. One row per
-- network, busiest first; duplicates are counted once
-- (FINAL). Read from the key's raw events: a per-address rollup is as large as the events
-- at typical keys' density, and the raw read is bounded by the key's own traffic.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 30d         start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
SELECT
    if(startsWith(toString(network), '::ffff:'),
       concat(replaceOne(toString(network), '::ffff:', ''), '/24'),
       concat(toString(network), '/48')) AS network,
    uniqExact(client_ip) AS ips,
    count() AS requests,
    countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')) AS denials,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM usage_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY usage_events.network
ORDER BY requests DESC, network
LIMIT {limit:UInt32}
SETTINGS do_not_merge_across_partitions_select_final = 1
