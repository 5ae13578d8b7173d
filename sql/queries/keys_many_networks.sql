-- keys_many_networks: keys used from at least N networks (IPv4 /24, IPv6 /48) in a window.
-- Answers: which keys look shared or leaked: one service calls from a few stable networks, a
-- leaked key shows up from many. Counts whole hours, from the one containing `since` up to
-- `until` (on-time events; the whole UTC days among them from usage_daily, the other hours as
-- usage_hourly has them). One row per key, most networks first, with up to 20 of them.
-- Parameters:
--   since         DateTime = 24h          start of the window (rounded down to the hour)
--   until         DateTime = now          end of the window (exclusive)
--   project       Project = ''            only this project's keys ('' = every project)
--   min_networks  UInt32[1..1000000] = 5  report keys with at least this many networks
--   limit         UInt32[1..10000] = 50   rows to return
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
        groupUniqArrayArray(network_list) AS all_networks,
        length(all_networks) AS networks,
        length(groupUniqArrayArray(ip_list)) AS ips,
        sum(requests) AS total_requests,
        min(first) AS first_hour,
        max(last) AS last_hour
    FROM
    (
        SELECT
            key_id, project_id, networks_seen AS network_list, ips_seen AS ip_list, requests,
            toDateTime(day, 'UTC') + toIntervalHour(arrayFirstIndex(r -> r > 0, requests_by_hour) - 1) AS first,
            toDateTime(day, 'UTC') + toIntervalHour(24 - arrayFirstIndex(r -> r > 0, arrayReverse(requests_by_hour))) AS last
        FROM usage_daily
        WHERE day >= days_from
          AND day < days_to
          AND ({project:String} = '' OR project_id = {project:String})
        UNION ALL
        SELECT key_id, project_id, networks_seen, ips_seen, requests, hour, hour
        FROM key_usage_hourly FINAL
        WHERE hour >= from_hour
          AND hour < {until:DateTime64(3, 'UTC')}
          AND hour < live_from
          AND (toDate(hour) < days_from OR toDate(hour) >= days_to)
          AND toDate(hour) >= toDate(from_hour, 'UTC')  -- ranges on the sort key's leading toDate(hour)
          AND toDate(hour) <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
          AND ({project:String} = '' OR project_id = {project:String})
        UNION ALL
        -- the live hours: counts from the per-minute rows, sets from the live set rollup
        SELECT key_id, project_id, [], [], sum(requests), toStartOfHour(minute) AS hour, hour
        FROM key_usage_minute FINAL
        WHERE minute >= greatest(live_from, from_hour)
          AND toStartOfHour(minute) < {until:DateTime64(3, 'UTC')}
          AND ({project:String} = '' OR project_id = {project:String})
        GROUP BY key_id, project_id, hour
        UNION ALL
        SELECT key_id, project_id, finalizeAggregation(networks), finalizeAggregation(ips), 0, hour, hour
        FROM key_usage_hour_sets
        WHERE hour >= greatest(live_from, from_hour)
          AND hour < {until:DateTime64(3, 'UTC')}
          AND ({project:String} = '' OR project_id = {project:String})
    )
    GROUP BY key_id, project_id
    HAVING networks >= {min_networks:UInt32}
)
ORDER BY networks DESC, key_id
LIMIT {limit:UInt32}
SETTINGS optimize_time_filter_with_preimage = 0
