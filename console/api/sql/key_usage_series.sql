-- key_usage_series: requests, errors and denials of one key per time bucket (from the per-minute counts).
SELECT
    toDateTime(intDiv(toUnixTimestamp(minute), {bucket:UInt32}) * {bucket:UInt32}, 'UTC') AS t,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sum(denials) AS denials
FROM key_usage_minute FINAL
WHERE key_id = {key_id:String}
  AND minute >= {since:DateTime64(3, 'UTC')}
  AND ({project:String} = '' OR project_id = {project:String})
GROUP BY t
ORDER BY t
