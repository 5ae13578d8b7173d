-- key_ips: the addresses one key was used from, with first and last seen.
-- Answers: from where is this key used, how much from each address, and since when. One row
-- per client address, busiest first; duplicates are counted once.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 7d          start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
WITH
    toStartOfHour({since:DateTime64(3, 'UTC')}) AS since_hour,
    if(since_hour = {since:DateTime64(3, 'UTC')}, since_hour, since_hour + INTERVAL 1 HOUR) AS whole_from,
    toStartOfHour({until:DateTime64(3, 'UTC')}) AS whole_to,
    stale AS
    (
        -- key-hours written since this key's rollup rows were last computed: those come from the events
        SELECT DISTINCT toStartOfHour(minute) AS hour
        FROM key_usage_minute
        WHERE key_id = {key_id:String}
          AND minute >= whole_from
          AND minute < whole_to
          AND inserted_at >= (SELECT max(computed_at) FROM key_usage_hourly_clients WHERE key_id = {key_id:String})
                             - INTERVAL 1 MINUTE
    ),
    clients AS
    (
        -- whole, settled hours of on-time events from the rollup ...
        SELECT client_ip, network, user_agent, requests, errors, denials, first_seen, last_seen
        FROM key_usage_hourly_clients FINAL
        WHERE key_id = {key_id:String}
          AND hour >= whole_from
          AND hour < whole_to
          AND hour NOT IN (SELECT hour FROM stale)
          AND ({project:String} = '' OR project_id = {project:String})
        UNION ALL
        -- ... and from the events: the window's partial edge hours, stale hours and late events,
        -- one row per event as FINAL keeps it
        SELECT
            client_ip, network, user_agent, 1, outcome = 'error' OR status >= 500,
            outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'), occurred_at, occurred_at
        FROM
        (
            SELECT
                occurred_at, any(client_ip) AS client_ip, any(network) AS network, any(user_agent) AS user_agent,
                any(outcome) AS outcome, any(status) AS status, max(on_time) AS on_time_copy
            FROM usage_events
            WHERE key_id = {key_id:String}
              AND occurred_at >= {since:DateTime64(3, 'UTC')}
              AND occurred_at < {until:DateTime64(3, 'UTC')}
              AND ({project:String} = '' OR project_id = {project:String})
              AND (occurred_at < whole_from OR occurred_at >= whole_to
                   OR toStartOfHour(occurred_at) IN (SELECT hour FROM stale)
                   OR event_id IN (SELECT event_id FROM usage_events
                                   WHERE key_id = {key_id:String}
                                     AND occurred_at >= {since:DateTime64(3, 'UTC')}
                                     AND occurred_at < {until:DateTime64(3, 'UTC')}
                                     AND on_time = 0))
            GROUP BY occurred_at, event_id
            HAVING on_time_copy = 0 OR occurred_at < whole_from OR occurred_at >= whole_to
                   OR toStartOfHour(occurred_at) IN (SELECT hour FROM stale)
        )
    )
SELECT
    replaceOne(toString(client_ip), '::ffff:', '') AS ip,
    if(startsWith(toString(network), '::ffff:'),
       concat(replaceOne(toString(network), '::ffff:', ''), '/24'),
       concat(toString(network), '/48')) AS network,
    sum(requests) AS requests,
    sum(denials) AS denials,
    sum(errors) AS errors,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen,
    arraySlice(arraySort(groupUniqArray(user_agent)), 1, 5) AS user_agents
FROM clients
GROUP BY client_ip, clients.network
ORDER BY requests DESC, ip
LIMIT {limit:UInt32}
