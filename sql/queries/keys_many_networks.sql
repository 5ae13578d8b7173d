-- keys_many_networks: keys used from at least N networks (IPv4 /24, IPv6 /48) in a window.
-- Answers: which keys look shared or leaked: one service calls from a few stable networks, a
-- leaked key shows up from many. Counts whole hours, from the one containing `since` up to
-- `until` (on-time events): networks and addresses from the live set rollups (whole UTC days from
-- key_usage_day_sets, the hours around them from key_usage_hour_sets), requests and first/last
-- active hour from usage_daily and usage_hourly. One row per key, most networks first, with up
-- to 20 of them.
-- Parameters:
--   since         DateTime = 24h          start of the window (rounded down to the hour)
--   until         DateTime = now          end of the window (exclusive)
--   project       Project = ''            only this project's keys ('' = every project)
--   min_networks  UInt32[1..1000000] = 5  report keys with at least this many networks
--   limit         UInt32[1..10000] = 50   rows to return
WITH
    toStartOfHour({since:DateTime64(3, 'UTC')}) AS from_hour,
    toDateTime(toStartOfHour({until:DateTime64(3, 'UTC')} - INTERVAL 1 MILLISECOND), 'UTC') + INTERVAL 1 HOUR AS to_hour,
    toDate(from_hour + INTERVAL 1 DAY - INTERVAL 1 SECOND, 'UTC') AS days_from,
    toDate(to_hour, 'UTC') AS days_to,
    -- the counts' daily rollup is settled only before the live hours of usage_hourly
    toDate(least(to_hour, toStartOfHour(now()) - INTERVAL 1 HOUR), 'UTC') AS count_days_to,
    sets AS
    (
        SELECT
            key_id,
            project_id,
            groupUniqArrayMerge(network_set) AS all_networks,
            length(all_networks) AS networks,
            length(groupUniqArrayMerge(ip_set)) AS ips
        FROM
        (
            SELECT key_id, project_id, networks AS network_set, ips AS ip_set
            FROM key_usage_day_sets
            WHERE day >= days_from
              AND day < days_to
              AND ({project:String} = '' OR project_id = {project:String})
            UNION ALL
            SELECT key_id, project_id, networks AS network_set, ips AS ip_set
            FROM key_usage_hour_sets
            WHERE hour >= from_hour
              AND hour < to_hour
              AND NOT (hour >= toDateTime(days_from, 'UTC') AND hour < toDateTime(days_to, 'UTC'))
              AND ({project:String} = '' OR project_id = {project:String})
        )
        GROUP BY key_id, project_id
        HAVING networks >= {min_networks:UInt32}
    ),
    counts AS
    (
        SELECT key_id, project_id, sum(requests) AS total_requests, min(first) AS first_hour, max(last) AS last_hour
        FROM
        (
            SELECT
                key_id, project_id, requests,
                toDateTime(day, 'UTC') + toIntervalHour(arrayFirstIndex(r -> r > 0, requests_by_hour) - 1) AS first,
                toDateTime(day, 'UTC') + toIntervalHour(24 - arrayFirstIndex(r -> r > 0, arrayReverse(requests_by_hour))) AS last
            FROM usage_daily
            WHERE day >= days_from
              AND day < count_days_to
              AND key_id IN (SELECT key_id FROM sets)
              AND ({project:String} = '' OR project_id = {project:String})
            UNION ALL
            SELECT key_id, project_id, requests, hour, hour
            FROM usage_hourly
            WHERE hour >= from_hour
              AND hour < {until:DateTime64(3, 'UTC')}
              AND NOT (hour >= toDateTime(days_from, 'UTC') AND hour < toDateTime(count_days_to, 'UTC'))
              AND key_id IN (SELECT key_id FROM sets)
              AND ({project:String} = '' OR project_id = {project:String})
        )
        GROUP BY key_id, project_id
    )
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
FROM sets
INNER JOIN counts USING (key_id, project_id)
ORDER BY networks DESC, key_id
LIMIT {limit:UInt32}
