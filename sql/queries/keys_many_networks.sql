-- keys_many_networks: keys used from at least N networks (IPv4 /24, IPv6 /48) in a window.
-- Answers: which keys look shared or leaked: one service calls from a few stable networks, a
-- leaked key shows up from many. Counts whole hours, from the one containing `since` up to
-- `until` (usage_hourly; on-time events). One row per key, most networks first, with up to 20
-- of them.
-- Parameters:
--   since         DateTime = 24h          start of the window (rounded down to the hour)
--   until         DateTime = now          end of the window (exclusive)
--   project       Project = ''            only this project's keys ('' = every project)
--   min_networks  UInt32[1..1000000] = 5  report keys with at least this many networks
--   limit         UInt32[1..10000] = 50   rows to return
SELECT
    key_id,
    project_id,
    networks,
    ips,
    total_requests,
    first_hour,
    last_hour,
    arraySlice(arraySort(arrayMap(n -> if(startsWith(toString(n), '::ffff:'),
                                          concat(replaceOne(toString(n), '::ffff:', ''), '/24'),
                                          concat(toString(n), '/48')), all_networks)), 1, 20) AS sample_networks
FROM
(
    SELECT
        key_id,
        project_id,
        uniqExactArray(networks_seen) AS networks,
        uniqExactArray(ips_seen) AS ips,
        groupUniqArrayArray(networks_seen) AS all_networks,
        sum(requests) AS total_requests,
        min(hour) AS first_hour,
        max(hour) AS last_hour
    FROM usage_hourly
    WHERE hour >= toStartOfHour({since:DateTime64(3, 'UTC')})
      AND hour < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
    GROUP BY key_id, project_id
    HAVING networks >= {min_networks:UInt32}
)
ORDER BY networks DESC, key_id
LIMIT {limit:UInt32}
