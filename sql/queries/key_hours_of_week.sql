-- key_hours_of_week: when in the week one key is used: requests per weekday and hour.
-- Answers: what is this key's normal rhythm (office hours, a nightly job, round the clock), so
-- use at an hour it is never active stands out. One row per weekday (1 = Monday) and hour that
-- had requests, in the given time zone, with the share of the key's requests and how many
-- distinct days contributed. Counts whole hours, from the one containing `since` up to `until`,
-- from the daily rollup (usage_daily, refreshed every five minutes; zones with a half-hour offset
-- are shifted to the whole hour).
-- Parameters:
--   key_id    String              the key's public id
--   since     DateTime = 28d      start of the window (rounded down to the hour)
--   until     DateTime = now      end of the window (exclusive)
--   project   Project = ''        only this project's usage ('' = every project)
--   timezone  Timezone = UTC      time zone of the weekdays and hours (IANA name)
SELECT
    toDayOfWeek(t, 0, {timezone:String}) AS weekday,
    toHour(t, {timezone:String}) AS hour,
    sum(r) AS total_requests,
    sum(e) AS total_errors,
    sum(d) AS total_denials,
    uniqExact(toDate(t, {timezone:String})) AS active_days,
    round(total_requests / sum(total_requests) OVER (), 4) AS share
FROM
(
    SELECT
        toDateTime(day, 'UTC') + toIntervalHour(cell.1) AS t,
        cell.2 AS r,
        cell.3 AS e,
        cell.4 AS d
    FROM usage_daily
    ARRAY JOIN arrayZip(range(24), requests_by_hour, errors_by_hour, denials_by_hour) AS cell
    WHERE key_id = {key_id:String}
      AND day >= toDate(toStartOfHour({since:DateTime64(3, 'UTC')}), 'UTC')
      AND day <= toDate({until:DateTime64(3, 'UTC')}, 'UTC')
      AND ({project:String} = '' OR project_id = {project:String})
)
WHERE t >= toStartOfHour({since:DateTime64(3, 'UTC')})
  AND t < {until:DateTime64(3, 'UTC')}
  AND r > 0
GROUP BY weekday, hour
ORDER BY weekday, hour
