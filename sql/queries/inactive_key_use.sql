-- inactive_key_use: requests made with revoked, expired or disabled keys.
-- Answers: is anyone still using a key that should be dead, and did any service still accept
-- it? Counts events a service refused as revoked, expired or disabled, and every event made
-- after the key's lifecycle audit (key_lifecycle_events) says it was revoked, disabled, expired
-- or purged and not enabled or renewed since. `accepted` > 0 means a service let a dead key in.
-- One row per key, accepted uses first; each event is counted once. The search is narrowed to
-- keys with such lifecycle changes and keys with such refusals in the window's days (the live
-- key_usage_day_sets, whose counter counts every stored copy, late ones too).
-- Parameters:
--   since    DateTime = 7d          start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's keys ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
WITH
refused_keys AS
(
    SELECT key_id
    FROM key_usage_day_sets
    WHERE day >= toDate({since:DateTime64(3, 'UTC')}, 'UTC')
      AND day <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
      AND inactive_copies > 0
      AND ({project:String} = '' OR project_id = {project:String})
),
changes AS
(
    SELECT key_id, occurred_at AS changed_at, action
    FROM key_lifecycle_events FINAL
    WHERE key_id IN (SELECT key_id FROM key_lifecycle_events WHERE action IN ('revoked', 'disabled', 'expired', 'purged'))
      AND occurred_at < {until:DateTime64(3, 'UTC')}
)
SELECT
    e.key_id AS key_id,
    e.project_id AS project_id,
    argMax(if(c.action IN ('revoked', 'disabled', 'expired', 'purged'), c.action, toString(e.outcome)), e.occurred_at) AS state,
    nullIf(maxIf(c.changed_at, c.action IN ('revoked', 'disabled', 'expired', 'purged')), toDateTime64(0, 3, 'UTC')) AS inactive_since,
    count() AS requests,
    countIf(e.outcome = 'ok') AS accepted,
    countIf(e.outcome IN ('revoked', 'expired', 'disabled')) AS refused_as_inactive,
    uniqExact(e.client_ip) AS ips,
    arraySort(groupUniqArray(5)(replaceOne(toString(e.client_ip), '::ffff:', ''))) AS sample_ips,
    arraySort(groupUniqArray(5)(e.service)) AS services,
    min(e.occurred_at) AS first_seen,
    max(e.occurred_at) AS last_seen
FROM
(
    SELECT event_id, key_id, project_id, occurred_at, outcome, client_ip, service
    FROM usage_events
    WHERE occurred_at >= {since:DateTime64(3, 'UTC')}
      AND occurred_at < {until:DateTime64(3, 'UTC')}
      AND ({project:String} = '' OR project_id = {project:String})
      AND key_id IN (SELECT key_id FROM refused_keys UNION DISTINCT SELECT key_id FROM changes)
      AND (outcome IN ('revoked', 'expired', 'disabled') OR key_id IN (SELECT key_id FROM changes))
    LIMIT 1 BY event_id
) AS e
ASOF LEFT JOIN changes AS c ON e.key_id = c.key_id AND e.occurred_at >= c.changed_at
WHERE e.outcome IN ('revoked', 'expired', 'disabled') OR c.action IN ('revoked', 'disabled', 'expired', 'purged')
GROUP BY e.key_id, e.project_id
ORDER BY accepted DESC, requests DESC, key_id
LIMIT {limit:UInt32}
