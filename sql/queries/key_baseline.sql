-- key_baseline: one key's last 24 hours against its own baseline.
-- Answers: is this key behaving differently today? Requests, errors, denials, distinct addresses,
-- networks, routes and user agents for the 24 hours ending with the hour that contains `at`
-- (usage_hourly, exact at any moment), against the `baseline_days` whole UTC days before the day
-- those 24 hours start in (usage_daily). One row per metric: the last 24 h, the baseline's daily
-- average (days without use count as zero) and maximum, their ratio, and for networks, routes and
-- user agents how many were never seen in the baseline (with up to ten examples).
-- Parameters:
--   key_id         String               the key's public id
--   at             DateTime = now       the 24 hours end with the hour containing this moment
--   baseline_days  UInt32[1..365] = 28  whole days of baseline before those 24 hours
--   project        Project = ''         only this project's usage ('' = every project)
WITH
    toStartOfHour({at:DateTime64(3, 'UTC')}) + INTERVAL 1 HOUR AS period_end,
    period_end - INTERVAL 1 DAY AS period_start,
    toDate(period_start, 'UTC') AS baseline_end,
    baseline_end - toIntervalDay({baseline_days:UInt32}) AS baseline_start,
    last_day AS
    (
        SELECT
            sum(requests) AS requests,
            sum(errors) AS errors,
            sum(denials) AS denials,
            length(groupUniqArrayArray(ips_seen)) AS ips,
            groupUniqArrayArray(networks_seen) AS network_set,
            groupUniqArrayArray(routes_seen) AS route_set,
            groupUniqArrayArray(user_agents_seen) AS agent_set
        FROM usage_hourly
        WHERE key_id = {key_id:String}
          AND hour >= period_start
          AND hour < period_end
          AND ({project:String} = '' OR project_id = {project:String})
    ),
    before AS
    (
        SELECT
            [sum(requests), sum(errors), sum(denials), sum(distinct_ips), sum(distinct_networks), sum(distinct_routes),
             sum(distinct_user_agents)] AS totals,
            [max(requests), max(errors), max(denials), max(distinct_ips), max(distinct_networks), max(distinct_routes),
             max(distinct_user_agents)] AS maxima,
            groupUniqArrayArray(networks_seen) AS networks_before,
            groupUniqArrayArray(routes_seen) AS routes_before,
            groupUniqArrayArray(user_agents_seen) AS agents_before
        FROM usage_daily
        WHERE key_id = {key_id:String}
          AND day >= baseline_start
          AND day < baseline_end
          AND ({project:String} = '' OR project_id = {project:String})
    ),
    compared AS
    (
        SELECT
            [requests, errors, denials, ips, length(network_set), length(route_set), length(agent_set)] AS today,
            totals,
            maxima,
            arrayFilter(n -> NOT has(networks_before, n), network_set) AS new_networks,
            arrayFilter(r -> NOT has(routes_before, r), route_set) AS new_routes,
            arrayFilter(a -> NOT has(agents_before, a), agent_set) AS new_agents
        FROM last_day CROSS JOIN before
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
            arrayMap(t -> t / {baseline_days:UInt32}, totals),
            maxima,
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
    FROM compared
)
