-- idle_keys: keys that were used once, but not in the last N days.
-- Answers: which keys can probably be revoked: they worked before and nobody has used them
-- since. The key list comes from the key store (ClickHouse cannot see it): pass the ids and
-- creation times of the keys to check, already confined to what the caller may see. Last use is
-- the newest event by event time (key_last_used). One row per idle key, longest idle first.
-- Parameters:
--   key_ids      Array(String)            ids of the keys to check
--   created_ats  Array(DateTime)          their creation times, in the same order
--   idle_days    UInt32[0..36500] = 30    report keys not used for at least this many days
--   at           DateTime = now           the moment to measure idleness at
--   project      Project = ''             only usage recorded for this project ('' = every project)
SELECT
    key_id,
    lu.project_id AS project_id,
    created_at,
    lu.last_used_at AS last_used_at,
    replaceOne(toString(lu.last_used_ip), '::ffff:', '') AS last_used_ip,
    lu.service AS last_service,
    lu.route AS last_route,
    dateDiff('day', lu.last_used_at, {at:DateTime64(3, 'UTC')}) AS idle_days
FROM
(
    SELECT key_id, created_at
    FROM (SELECT {key_ids:Array(String)} AS ids, {created_ats:Array(DateTime64(3, 'UTC'))} AS created)
    ARRAY JOIN ids AS key_id, created AS created_at
) AS keys
INNER JOIN
(
    SELECT key_id, project_id, last_used_at, last_used_ip, service, route
    FROM key_last_used FINAL
    WHERE key_id IN {key_ids:Array(String)}
      AND ({project:String} = '' OR project_id = {project:String})
) AS lu USING key_id
WHERE lu.last_used_at < {at:DateTime64(3, 'UTC')} - toIntervalDay({idle_days:UInt32})
ORDER BY last_used_at, key_id
