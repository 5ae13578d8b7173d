-- key_hours_of_week: when in the week one key is used: requests per weekday and hour.
-- Answers: what is this key's normal rhythm (office hours, a nightly job, round the clock), so
-- use at an hour it is never active stands out. One row per weekday (1 = Monday) and hour that
-- had requests, in the given time zone, with the share of the key's requests and how many
-- distinct days contributed. Read from the per-minute counts (newest revision of each minute).
-- Parameters:
--   key_id    String              the key's public id
--   since     DateTime = 28d      start of the window (inclusive; minutes starting inside count)
--   until     DateTime = now      end of the window (exclusive)
--   project   Project = ''        only this project's usage ('' = every project)
--   timezone  Timezone = UTC      time zone of the weekdays and hours (IANA name)
SELECT
    toDayOfWeek(minute, 0, {timezone:String}) AS weekday,
    toHour(minute, {timezone:String}) AS hour,
    sum(requests) AS total_requests,
    sum(errors) AS total_errors,
    sum(denials) AS total_denials,
    uniqExact(toDate(minute, {timezone:String})) AS active_days,
    round(total_requests / sum(total_requests) OVER (), 4) AS share
FROM key_usage_minute FINAL
WHERE key_id = {key_id:String}
  AND minute >= {since:DateTime64(3, 'UTC')}
  AND minute < {until:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY weekday, hour
HAVING total_requests > 0
ORDER BY weekday, hour
SETTINGS do_not_merge_across_partitions_select_final = 1
