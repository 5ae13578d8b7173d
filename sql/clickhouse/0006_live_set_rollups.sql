-- Live per key-hour and key-day sets, so the canned queries stay within 50 ms over 10M events.
--
-- 1. key_usage_hourly_clients (0005) goes: at this traffic's density (most key-hours hold a few
--    events from different addresses) it was about as big as usage_events, and reading it still
--    needed a raw-event branch for stale and late key-hours. The per-key address, network and
--    user-agent queries read the key's raw events again (usage_events, FINAL); see sql/queries/.
-- 2. key_usage_hour_sets and key_usage_day_sets: per key and hour / UTC day, the sets of client
--    addresses, networks, routes and user agents of on-time events, and upper bounds of the
--    refused events (every copy, late ones included). Filled by insert-triggered materialized
--    views from usage_events, so they are live: an event is in them as soon as it is stored, and
--    nobody waits for a refresh. A set state is idempotent (an event delivered twice adds the
--    same member twice), so sets are exact; the refusal counters count every copy, so they are
--    only used to narrow a search (a copy can only add candidates; the exact count is taken
--    from the raw events afterwards). Read them with GROUP BY and the -Merge combinator.
--    key_usage_hour_sets is ordered by day first, so a window over every key reads only its days.
-- 3. usage_hourly (the view) takes the sets of its live current and previous hour from
--    key_usage_hour_sets instead of grouping the raw events of those hours.
-- Both tables are filled from the existing events here (each event once per table).

DROP VIEW IF EXISTS key_usage_hourly_clients_refresh;

DROP TABLE IF EXISTS key_usage_hourly_clients;

CREATE TABLE IF NOT EXISTS key_usage_hour_sets
(
    key_id           String,
    hour             DateTime('UTC'),
    project_id       LowCardinality(String),
    ips              AggregateFunction(groupUniqArray, IPv6) COMMENT 'client addresses of on-time events',
    networks         AggregateFunction(groupUniqArray, IPv6) COMMENT 'client networks (IPv4 /24, IPv6 /48) of on-time events',
    routes           AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'route templates of on-time events',
    user_agents      AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'user agents of on-time events',
    denied_copies    SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of refused events (denied .. rate_limited), late ones included: an upper bound',
    inactive_copies  SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of events refused as revoked, expired or disabled: an upper bound'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (toDate(hour), key_id, hour, project_id)
TTL hour + INTERVAL 400 DAY
COMMENT 'Live sets per key and hour from usage_events (insert-triggered); exact under re-delivery';

CREATE TABLE IF NOT EXISTS key_usage_day_sets
(
    key_id           String,
    day              Date,
    project_id       LowCardinality(String),
    ips              AggregateFunction(groupUniqArray, IPv6) COMMENT 'client addresses of on-time events',
    networks         AggregateFunction(groupUniqArray, IPv6) COMMENT 'client networks (IPv4 /24, IPv6 /48) of on-time events',
    routes           AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'route templates of on-time events',
    user_agents      AggregateFunction(groupUniqArray, LowCardinality(String)) COMMENT 'user agents of on-time events',
    denied_copies    SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of refused events, late ones included: an upper bound',
    inactive_copies  SimpleAggregateFunction(sum, UInt64) COMMENT 'stored copies of events refused as revoked, expired or disabled: an upper bound'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (key_id, day, project_id)
TTL day + INTERVAL 1100 DAY
COMMENT 'Live sets per key and UTC day from usage_events (insert-triggered); exact under re-delivery';

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_hour_sets_mv TO key_usage_hour_sets AS
SELECT
    key_id,
    toStartOfHour(occurred_at) AS hour,
    project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1) AS ips,
    groupUniqArrayStateIf(network, on_time = 1) AS networks,
    groupUniqArrayStateIf(route, on_time = 1) AS routes,
    groupUniqArrayStateIf(user_agent, on_time = 1) AS user_agents,
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))) AS denied_copies,
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled'))) AS inactive_copies
FROM usage_events
GROUP BY key_id, hour, project_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS key_usage_day_sets_mv TO key_usage_day_sets AS
SELECT
    key_id,
    toDate(occurred_at, 'UTC') AS day,
    project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1) AS ips,
    groupUniqArrayStateIf(network, on_time = 1) AS networks,
    groupUniqArrayStateIf(route, on_time = 1) AS routes,
    groupUniqArrayStateIf(user_agent, on_time = 1) AS user_agents,
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))) AS denied_copies,
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled'))) AS inactive_copies
FROM usage_events
GROUP BY key_id, day, project_id;

INSERT INTO key_usage_hour_sets
SELECT
    key_id, toStartOfHour(occurred_at) AS hour, project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1), groupUniqArrayStateIf(network, on_time = 1),
    groupUniqArrayStateIf(route, on_time = 1), groupUniqArrayStateIf(user_agent, on_time = 1),
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))),
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled')))
FROM usage_events
GROUP BY key_id, hour, project_id;

INSERT INTO key_usage_day_sets
SELECT
    key_id, toDate(occurred_at, 'UTC') AS day, project_id,
    groupUniqArrayStateIf(client_ip, on_time = 1), groupUniqArrayStateIf(network, on_time = 1),
    groupUniqArrayStateIf(route, on_time = 1), groupUniqArrayStateIf(user_agent, on_time = 1),
    toUInt64(countIf(outcome IN ('denied', 'invalid', 'expired', 'revoked', 'disabled', 'rate_limited'))),
    toUInt64(countIf(outcome IN ('revoked', 'expired', 'disabled')))
FROM usage_events
GROUP BY key_id, day, project_id;

-- usage_hourly as in 0002, except that the live hours' sets come from key_usage_hour_sets.
DROP VIEW IF EXISTS usage_hourly;

CREATE VIEW IF NOT EXISTS usage_hourly AS
SELECT
    key_id, hour, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes,
    ips_seen, networks_seen, routes_seen, user_agents_seen, distinct_ips, distinct_networks
FROM key_usage_hourly FINAL
WHERE hour < toStartOfHour(now()) - INTERVAL 1 HOUR
UNION ALL
SELECT
    key_id, hour, project_id, requests, errors, denials,
    outcome_ok, outcome_denied, outcome_invalid, outcome_expired, outcome_revoked, outcome_disabled,
    outcome_rate_limited, outcome_error, request_bytes, response_bytes, active_minutes,
    ips_seen, networks_seen, routes_seen, user_agents_seen,
    toUInt32(length(ips_seen)) AS distinct_ips, toUInt32(length(networks_seen)) AS distinct_networks
FROM
(
    SELECT
        key_id, toStartOfHour(minute) AS hour, project_id,
        sum(requests) AS requests, sum(errors) AS errors, sum(denials) AS denials,
        sum(outcome_ok) AS outcome_ok, sum(outcome_denied) AS outcome_denied,
        sum(outcome_invalid) AS outcome_invalid, sum(outcome_expired) AS outcome_expired,
        sum(outcome_revoked) AS outcome_revoked, sum(outcome_disabled) AS outcome_disabled,
        sum(outcome_rate_limited) AS outcome_rate_limited, sum(outcome_error) AS outcome_error,
        sum(request_bytes) AS request_bytes, sum(response_bytes) AS response_bytes,
        toUInt16(count()) AS active_minutes
    FROM key_usage_minute FINAL
    WHERE minute >= toStartOfHour(now()) - INTERVAL 1 HOUR
    GROUP BY key_id, hour, project_id
) AS counts
LEFT JOIN
(
    SELECT
        key_id, hour,
        arraySort(groupUniqArrayMerge(ips)) AS ips_seen,
        arraySort(groupUniqArrayMerge(networks)) AS networks_seen,
        arraySort(groupUniqArrayMerge(routes)) AS routes_seen,
        arraySort(groupUniqArrayMerge(user_agents)) AS user_agents_seen
    FROM key_usage_hour_sets
    WHERE hour >= toStartOfHour(now()) - INTERVAL 1 HOUR
    GROUP BY key_id, hour
) AS seen USING (key_id, hour);
