-- 0009: key_last_use, the newest use of each key as people read it.
-- The key store is not visible from ClickHouse, so a dashboard (Grafana's "Last used" and "Idle
-- keys" panels, infra/grafana/) cannot pass the key list idle_keys.sql takes; this view gives the
-- keys ClickHouse has seen used, with the address in the same text form as the canned queries.

CREATE VIEW IF NOT EXISTS key_last_use AS
SELECT
    key_id,
    project_id,
    last_used_at,
    replaceOne(toString(last_used_ip), '::ffff:', '') AS last_used_ip,
    service AS last_service,
    route AS last_route
FROM key_last_used FINAL;
