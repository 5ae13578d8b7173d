-- replay_usage_events: the raw audit trail in replay order, one key range at a time.
-- Parameters: after_key String (exclusive lower bound on key_id), max_keys UInt32.
-- Only on-time events: late ones were never counted by the stream, so replay skips them too.
SELECT
    toString(event_id) AS event_id,
    occurred_at,
    key_id,
    project_id,
    service,
    method,
    route,
    status,
    toString(outcome) AS outcome,
    latency_ms,
    request_bytes,
    response_bytes,
    replaceRegexpOne(IPv6NumToString(client_ip), '^::ffff:', '') AS client_ip,
    user_agent,
    request_id
FROM usage_events FINAL
WHERE on_time = 1
  AND key_id IN (
        SELECT DISTINCT key_id FROM usage_events
        WHERE key_id > {after_key:String}
        ORDER BY key_id
        LIMIT {max_keys:UInt32}
  )
ORDER BY key_id, occurred_at, event_id
