-- key_timeline: every request made with one key, newest first.
-- Answers: who used this key, when, from where, for what and with what outcome. One row per
-- event: a duplicate delivery is shown once, and an on-time copy wins over a late one. Reads the
-- key's events newest first in table order and stops after `limit` rows (no FINAL: copies of an
-- event sit next to each other in that order, so LIMIT 1 BY keeps one, the on-time one first).
-- Without outcome and route filters the read starts at the newest whole minute from which the
-- key's per-minute counts (events already stored, each once) reach `limit`, so only the parts of
-- the last minutes are opened.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 24h         start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's events ('' = every project)
--   outcome  Enum(|ok|denied|invalid|expired|revoked|disabled|rate_limited|error) = ''  only this outcome ('' = all)
--   route    String = ''            only this route template ('' = all)
--   limit    UInt32[1..10000] = 100 newest rows to return
WITH
    (
        SELECT max(minute)
        FROM
        (
            SELECT minute, sum(requests) OVER (ORDER BY minute DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newer
            FROM key_usage_minute FINAL
            WHERE key_id = {key_id:String}
              AND minute >= {since:DateTime64(3, 'UTC')}
              AND minute + INTERVAL 1 MINUTE <= {until:DateTime64(3, 'UTC')}
              AND ({project:String} = '' OR project_id = {project:String})
        )
        WHERE newer >= {limit:UInt32}
    ) AS enough_from,
    if({outcome:String} = '' AND {route:String} = '' AND enough_from IS NOT NULL,
       greatest(toDateTime64(enough_from, 3, 'UTC'), {since:DateTime64(3, 'UTC')}), {since:DateTime64(3, 'UTC')}) AS read_from
SELECT
    occurred_at,
    event_id,
    project_id,
    service,
    method,
    route,
    status,
    outcome,
    replaceOne(toString(client_ip), '::ffff:', '') AS client_ip,
    user_agent,
    latency_ms,
    request_bytes,
    response_bytes,
    request_id,
    on_time = 0 AS late
FROM usage_events
WHERE key_id = {key_id:String}
  AND occurred_at >= read_from
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
  AND ({outcome:String} = '' OR toString(outcome) = {outcome:String})
  AND ({route:String} = '' OR route = {route:String})
ORDER BY occurred_at DESC, event_id, on_time DESC
LIMIT 1 BY occurred_at, event_id
LIMIT {limit:UInt32}
