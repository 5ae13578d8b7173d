-- alerts: alert state (newest revision of each alert), newest first, confined to a project.
SELECT
    alert_id, key_id, project_id, rule, toString(severity) AS severity, toString(status) AS status,
    opened_at, updated_at, resolved_at, last_notified_at, evidence, message
FROM alerts FINAL
WHERE opened_at >= {since:DateTime64(3, 'UTC')}
  AND ({key_id:String} = '' OR key_id = {key_id:String})
  AND ({status:String} = '' OR toString(status) = {status:String})
  AND ({project:String} = '' OR project_id = {project:String})
ORDER BY opened_at DESC, alert_id
LIMIT {limit:UInt32}
