-- never_used_keys: keys created at least N days ago that have never been used.
-- Answers: which keys were handed out and never put to work (forgotten, or waiting to be
-- misused). The key list comes from the key store: pass the ids and creation times of the keys
-- to check, already confined to what the caller may see. One row per never-used key, oldest first.
-- Parameters:
--   key_ids      Array(String)            ids of the keys to check
--   created_ats  Array(DateTime)          their creation times, in the same order
--   idle_days    UInt32[0..36500] = 30    report keys created at least this many days before `at`
--   at           DateTime = now           the moment to measure at
--   project      Project = ''             only usage recorded for this project counts ('' = any)
SELECT
    key_id,
    created_at,
    dateDiff('day', created_at, {at:DateTime64(3, 'UTC')}) AS age_days
FROM
(
    SELECT key_id, created_at
    FROM (SELECT {key_ids:Array(String)} AS ids, {created_ats:Array(DateTime64(3, 'UTC'))} AS created)
    ARRAY JOIN ids AS key_id, created AS created_at
)
WHERE created_at < {at:DateTime64(3, 'UTC')} - toIntervalDay({idle_days:UInt32})
  AND key_id NOT IN
  (
      SELECT key_id
      FROM key_last_used
      WHERE key_id IN {key_ids:Array(String)}
        AND ({project:String} = '' OR project_id = {project:String})
  )
ORDER BY created_at, key_id
