-- replay_late_minutes: the (key, minute) pairs holding late events, for the keys of one replay chunk.
-- Parameters: keys Array(String).
-- The stream recounts a late event's minute from the audit trail (late events included); replay
-- recounts the same minutes after folding the on-time events, so the minute rows come out the same.
SELECT key_id, toUInt32(toStartOfMinute(occurred_at)) AS minute
FROM usage_events FINAL
WHERE on_time = 0
  AND key_id IN {keys:Array(String)}
GROUP BY key_id, minute
ORDER BY key_id, minute
