-- key_baseline: one key's last 24 hours against its own baseline.
-- Answers: is this key behaving differently today? For the 24 hours ending with the hour that
-- contains `at`, and for each of the `baseline_days` 24-hour periods before them: requests,
-- errors, denials, distinct addresses, networks, routes and user agents. One row per metric: the
-- last 24 h, the baseline's daily average (days without use count as zero) and maximum, their
-- ratio, and for networks, routes and user agents how many were never seen in the baseline (with
-- examples). Read from usage_hourly (exact at any moment; on-time events).
-- Parameters:
--   key_id         String               the key's public id
--   at             DateTime = now       the 24 hours end with the hour containing this moment
--   baseline_days  UInt32[1..365] = 28  length of the baseline before those 24 hours
--   project        Project = ''         only this project's usage ('' = every project)
WITH
    toStartOfHour({at:DateTime64(3, 'UTC')}) + INTERVAL 1 HOUR AS period_end,
    period_end - INTERVAL 1 DAY AS period_start,
    period_start - toIntervalDay({baseline_days:UInt32}) AS baseline_start,
    per_day AS
    (
        SELECT
            if(hour >= period_start, -1, toInt32(intDiv(dateDiff('hour', baseline_start, hour), 24))) AS day,
            sum(requests) AS requests,
            sum(errors) AS errors,
            sum(denials) AS denials,
            arrayDistinct(arrayFlatten(groupArray(ips_seen))) AS ip_set,
            arrayDistinct(arrayFlatten(groupArray(networks_seen))) AS network_set,
            arrayDistinct(arrayFlatten(groupArray(routes_seen))) AS route_set,
            arrayDistinct(arrayFlatten(groupArray(user_agents_seen))) AS agent_set,
            length(ip_set) AS ips,
            length(network_set) AS networks,
            length(route_set) AS routes,
            length(agent_set) AS user_agents
        FROM usage_hourly
        WHERE key_id = {key_id:String}
          AND hour >= baseline_start
          AND hour < period_end
          AND ({project:String} = '' OR project_id = {project:String})
        GROUP BY day
    ),
    summary AS
    (
        SELECT
            [sumIf(requests, day = -1), sumIf(errors, day = -1), sumIf(denials, day = -1), sumIf(ips, day = -1),
             sumIf(networks, day = -1), sumIf(routes, day = -1), sumIf(user_agents, day = -1)] AS today,
            [sumIf(requests, day >= 0), sumIf(errors, day >= 0), sumIf(denials, day >= 0), sumIf(ips, day >= 0),
             sumIf(networks, day >= 0), sumIf(routes, day >= 0), sumIf(user_agents, day >= 0)] AS baseline_total,
            [maxIf(requests, day >= 0), maxIf(errors, day >= 0), maxIf(denials, day >= 0), maxIf(ips, day >= 0),
             maxIf(networks, day >= 0), maxIf(routes, day >= 0), maxIf(user_agents, day >= 0)] AS baseline_max,
            groupArrayIf(network_set, day = -1) AS networks_today,
            groupArrayIf(network_set, day >= 0) AS networks_before,
            groupArrayIf(route_set, day = -1) AS routes_today,
            groupArrayIf(route_set, day >= 0) AS routes_before,
            groupArrayIf(agent_set, day = -1) AS agents_today,
            groupArrayIf(agent_set, day >= 0) AS agents_before
        FROM per_day
    ),
    news AS
    (
        SELECT
            today, baseline_total, baseline_max,
            arrayFilter(n -> NOT has(arrayFlatten(networks_before), n), arrayFlatten(networks_today)) AS new_networks,
            arrayFilter(r -> NOT has(arrayFlatten(routes_before), r), arrayFlatten(routes_today)) AS new_routes,
            arrayFilter(a -> NOT has(arrayFlatten(agents_before), a), arrayFlatten(agents_today)) AS new_agents
        FROM summary
    )
SELECT
    metric,
    last_24h,
    round(baseline_mean, 2) AS baseline_daily_avg,
    baseline_daily_max,
    if(baseline_mean > 0, round(last_24h / baseline_mean, 2), NULL) AS ratio,
    never_seen_before,
    examples
FROM
(
    SELECT
        arrayJoin(arrayZip(
            ['requests', 'errors', 'denials', 'ips', 'networks', 'routes', 'user_agents'],
            today,
            arrayMap(t -> t / {baseline_days:UInt32}, baseline_total),
            baseline_max,
            [0, 0, 0, 0, length(new_networks), length(new_routes), length(new_agents)],
            [[], [], [], [],
             arraySlice(arraySort(arrayMap(n -> if(startsWith(toString(n), '::ffff:'),
                                                   concat(replaceOne(toString(n), '::ffff:', ''), '/24'),
                                                   concat(toString(n), '/48')), new_networks)), 1, 10),
             arraySlice(arraySort(new_routes), 1, 10),
             arraySlice(arraySort(new_agents), 1, 10)]
        )) AS row,
        row.1 AS metric,
        row.2 AS last_24h,
        row.3 AS baseline_mean,
        row.4 AS baseline_daily_max,
        row.5 AS never_seen_before,
        row.6 AS examples
    FROM news
)
