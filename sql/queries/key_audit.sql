-- key_audit: every change made to one key (created, rotated, renewed, disabled, revoked, ...).
-- Answers: who did what to this key and when, with the public record before and after (JSON;
-- never a secret). Newest first; each lifecycle event is shown once.
-- Parameters:
--   key_id   String                 the key's public id
--   since    DateTime = 3650d       start of the window (inclusive)
--   until    DateTime = now         end of the window (exclusive)
--   project  Project = ''           only this project's keys ('' = every project)
--   limit    UInt32[1..10000] = 100 rows to return
SELECT
    occurred_at,
    action,
    actor,
    reason,
    before,
    after,
    event_id,
    project_id
FROM key_lifecycle_events FINAL
WHERE key_id = {key_id:String}
  AND occurred_at >= {since:DateTime64(3, 'UTC')}
  AND occurred_at < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
ORDER BY occurred_at DESC, event_id
LIMIT {limit:UInt32}
