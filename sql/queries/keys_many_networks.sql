-- keys_many_networks: keys used from at least N networks (IPv4 /24, IPv6 /48) in a window.
-- Answers: which keys look shared or leaked: one service calls from a few stable networks, a
-- leaked key shows up from many. One row per key, most networks first, with a sample of them.
-- Parameters:
--   since         DateTime = 24h          start of the window (inclusive)
--   until         DateTime = now          end of the window (exclusive)
--   project       Project = ''            only this project's keys ('' = every project)
--   min_networks  UInt32[1..1000000] = 5  report keys with at least this many networks
--   limit         UInt32[1..10000] = 50   rows to return
WITH wide AS
(
    SELECT
        key_id,
        project_id,
        uniqExact(network) AS networks,
        uniqExact(client_ip) AS ips,
        min(occurred_at) AS first_seen,
        max(occurred_at) AS last_seen,
        arraySort(groupUniqArray(20)(network)) AS some_networks
    FROM usage_events
    WHERE occurred_at >= {since:DateTime64(3, 'UTC')}
      AND occurred_at < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
    GROUP BY key_id, project_id
    HAVING networks >= {min_networks:UInt32}
    ORDER BY networks DESC, key_id
    LIMIT {limit:UInt32}
)
SELECT
    key_id,
    project_id,
    networks,
    ips,
    requests,
    first_seen,
    last_seen,
    arrayMap(n -> if(startsWith(toString(n), '::ffff:'),
                     concat(replaceOne(toString(n), '::ffff:', ''), '/24'),
                     concat(toString(n), '/48')), some_networks) AS sample_networks
FROM wide
LEFT JOIN
(
    SELECT key_id, uniqExact(event_id) AS requests
    FROM usage_events
    WHERE key_id IN (SELECT key_id FROM wide)
      AND occurred_at >= {since:DateTime64(3, 'UTC')}
      AND occurred_at < {until:DateTime64(3, 'UTC')}
    GROUP BY key_id
) AS counted USING key_id
ORDER BY networks DESC, key_id
