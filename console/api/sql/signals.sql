-- signals: explained findings, newest first, optionally for one key or kind, confined to a project;
-- marked_expected = someone marked the signal expected (detector_feedback).
SELECT
    toString(signal_id) AS signal_id, key_id, project_id, kind, toString(severity) AS severity,
    score, observed, expected, window_start, window_end, detected_at, evidence, message,
    toString(signal_id) IN (SELECT signal_id FROM detector_feedback) AS marked_expected
FROM signals FINAL
WHERE detected_at >= {since:DateTime64(3, 'UTC')}
  AND ({key_id:String} = '' OR key_id = {key_id:String})
  AND ({kind:String} = '' OR kind = {kind:String})
  AND ({project:String} = '' OR project_id = {project:String})
ORDER BY detected_at DESC, signal_id
LIMIT {limit:UInt32}
