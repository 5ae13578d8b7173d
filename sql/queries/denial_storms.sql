-- denial_storms: bursts of refused requests: keys with at least N denials in a few minutes.
-- Answers: who is hammering a key it may not use (credential stuffing, a revoked key in a retry
-- loop, a scope mistake deployed everywhere). Denials are the outcomes denied, invalid, expired,
-- revoked, disabled and rate_limited. One row per key and time bucket, biggest burst first;
-- each event is counted once however often it was delivered. The live set rollups narrow the
-- search: their refusal counters count every stored copy (late ones too), so they never count
-- less than the events: the hours that can hold such a bucket (key_usage_hour_sets) of the keys
-- with enough in the window's days (key_usage_day_sets); the buckets are then counted from
-- the raw events.
-- Parameters:
--   since           DateTime = 24h          start of the window (inclusive)
--   until           DateTime = now          end of the window (exclusive)
--   project         Project = ''            only this project's keys ('' = every project)
--   min_denials     UInt32[1..1000000] = 20 report buckets with at least this many denials
--   bucket_minutes  UInt32[1..1440] = 5     bucket length in minutes (buckets align to the clock)
--   limit           UInt32[1..10000] = 50   rows to return
WITH
    denied_keys AS
    (
        SELECT key_id
        FROM key_usage_day_sets
        WHERE day >= toDate({since:DateTime64(3, 'UTC')}, 'UTC')
          AND day <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
          AND ({project:String} = '' OR project_id = {project:String})
        GROUP BY key_id
        HAVING sum(denied_copies) >= {min_denials:UInt32}
    ),
    denied_hours AS
    (
        -- hours that can hold a bucket with enough denials: their bucket group has enough in total.
        -- A group is the hour itself when buckets fit in an hour, the bucket when buckets are whole
        -- hours, else the whole window.
        SELECT key_id, hour
        FROM
        (
            SELECT
                key_id,
                hour,
                sum(denials) OVER (PARTITION BY key_id, multiIf(
                    60 % {bucket_minutes:UInt32} = 0, hour,
                    {bucket_minutes:UInt32} % 60 = 0, toStartOfInterval(hour, toIntervalMinute({bucket_minutes:UInt32})),
                    toDateTime(0, 'UTC'))) AS group_denials
            FROM
            (
                SELECT key_id, hour, sum(denied_copies) AS denials
                FROM key_usage_hour_sets
                WHERE toDate(hour) >= toDate({since:DateTime64(3, 'UTC')}, 'UTC')
                  AND toDate(hour) <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
                  AND hour >= toStartOfHour({since:DateTime64(3, 'UTC')})
                  AND hour < {until:DateTime64(3, 'UTC')}
                  AND denied_copies > 0
                  AND ({project:String} = '' OR project_id = {project:String})
                GROUP BY key_id, hour
                -- when the group is the hour, an hour with fewer cannot qualify
                HAVING denials >= if(60 % {bucket_minutes:UInt32} = 0, {min_denials:UInt32}, 1)
            )
        )
        WHERE group_denials >= {min_denials:UInt32}
    )
SELECT
    key_id,
    project_id,
    toStartOfInterval(occurred_at, toIntervalMinute({bucket_minutes:UInt32})) AS bucket_start,
    bucket_start + toIntervalMinute({bucket_minutes:UInt32}) AS bucket_end,
    count() AS denials,
    uniqExact(client_ip) AS ips,
    arraySort(groupUniqArray(5)(replaceOne(toString(client_ip), '::ffff:', ''))) AS sample_ips,
    arraySort(groupUniqArray(toString(outcome))) AS outcomes,
    arraySort(groupUniqArray(5)(route)) AS routes,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM
(
    SELECT event_id, key_id, project_id, occurred_at, outcome, client_ip, route
    FROM usage_events
    WHERE key_id IN (SELECT key_id FROM denied_keys)
      AND (key_id, toStartOfHour(occurred_at)) IN (SELECT key_id, hour FROM denied_hours)
      AND occurred_at >= {since:DateTime64(3, 'UTC')}
      AND occurred_at < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
      AND outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited')
    LIMIT 1 BY event_id
)
GROUP BY key_id, project_id, bucket_start
HAVING denials >= {min_denials:UInt32}
ORDER BY denials DESC, bucket_start, key_id
LIMIT {limit:UInt32}
SETTINGS optimize_time_filter_with_preimage = 0
