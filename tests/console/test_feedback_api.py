"""POST /v1/signals/{id}/expected and /v1/alerts/{id}/expected: scoped, scrubbed, idempotent, and teaching."""

from __future__ import annotations

from tests.console.conftest import bearer
from tests.embedded.feedback_scenario import (
    AGAIN_PUBLIC_IP,
    day_zero,
    first_public_use,
    renumbered_then_public_again,
)

MINE, THEIRS = "proj-mine", "proj-theirs"


def _signal_of(console, secret: str, key_id: str) -> dict:  # noqa: ANN001
    listed = console.client.get("/v1/signals", headers=bearer(secret),
                                params={"kind": "new_network", "since": "60d", "key_id": key_id})
    assert listed.status_code == 200, listed.text
    (row,) = listed.json()["rows"]
    return row


def _audit(console, key_id: str) -> list[dict]:  # noqa: ANN001
    rows = console.pipeline.clickhouse.query(
        "SELECT project_id, actor, reason FROM key_lifecycle_events FINAL "
        "WHERE key_id = {k:String} AND action = 'marked_expected'", {"k": key_id})
    return rows


def test_marks_are_scoped_scrubbed_idempotent_and_teach_only_the_marked_key(console):
    start = day_zero()
    _, writer = console.new_key(MINE, "project:write")
    _, reader = console.new_key(MINE, "project:read")
    _, outsider = console.new_key(THEIRS, "project:write")
    key_a, secret_a = console.new_key(MINE, name="vendor a")
    key_b, _ = console.new_key(MINE, name="vendor b")
    key_t, _ = console.new_key(THEIRS, name="theirs")
    console.pipeline.ingest(first_public_use(key_a, MINE, start) + first_public_use(key_b, MINE, start)
                            + first_public_use(key_t, THEIRS, start))
    signal = _signal_of(console, writer, key_a)
    assert signal["marked_expected"] in (0, False)
    url = f"/v1/signals/{signal['signal_id']}/expected"

    # Another project's writer: 404, as if the signal did not exist (no 403, no key id in the answer).
    foreign = console.client.post(url, headers=bearer(outsider), json={"reason": "mine now"})
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "signal_not_found"
    assert key_a not in foreign.text
    # A read-only key of the right project may not teach.
    read_only = console.client.post(url, headers=bearer(reader), json={})
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "insufficient_scope"
    # Not a signal id at all.
    garbage = console.client.post("/v1/signals/not-a-uuid/expected", headers=bearer(writer))
    assert garbage.status_code == 404
    assert _audit(console, key_a) == []

    # The writer marks it; a forged project id in the body is ignored, a secret in the reason redacted.
    body = {"reason": f"vendor VPN, token {secret_a}", "project_id": THEIRS, "key_id": key_t}
    marked = console.client.post(url, headers=bearer(writer), json=body)
    assert marked.status_code == 200, marked.text
    (mark,) = marked.json()["marks"]
    assert (mark["project_id"], mark["key_id"], mark["learnt_by"], mark["already_marked"]) == (
        MINE, key_a, "new_network", False)
    assert secret_a not in marked.text and "[REDACTED" in mark["reason"]
    assert _signal_of(console, writer, key_a)["marked_expected"] in (1, True)
    assert _signal_of(console, writer, key_b)["marked_expected"] in (0, False)
    again = console.client.post(url, headers=bearer(writer), json={"reason": "twice"})
    assert again.status_code == 200 and again.json()["marks"][0]["already_marked"] is True
    (audit,) = _audit(console, key_a)
    assert audit["project_id"] == MINE and audit["actor"].startswith("api:") and secret_a not in audit["reason"]
    stored = console.pipeline.clickhouse.query("SELECT project_id, reason FROM detector_feedback FINAL")
    assert [row["project_id"] for row in stored] == [MINE] and secret_a not in stored[0]["reason"]

    # The same network again: the marked key stays quiet, the other key of the project does not.
    result = console.pipeline.ingest(renumbered_then_public_again(key_a, MINE, start)
                                     + renumbered_then_public_again(key_b, MINE, start))
    assert [(s.key_id, s.evidence["ips"]) for s in result.signals if s.kind.value == "new_network"] == [
        (key_b, [AGAIN_PUBLIC_IP])]


def test_alert_marks_are_scoped_and_resolve_the_alert(console):
    start = day_zero()
    _, writer = console.new_key("proj-alerts", "project:write")
    _, outsider = console.new_key("proj-elsewhere", "project:write")
    key, _ = console.new_key("proj-alerts", name="alerted")
    console.pipeline.ingest(first_public_use(key, "proj-alerts", start))
    listed = console.client.get("/v1/alerts", headers=bearer(writer), params={"key_id": key, "since": "60d"})
    (alert,) = [row for row in listed.json()["rows"] if row["rule"] == "new_network"]
    url = f"/v1/alerts/{alert['alert_id']}/expected"
    foreign = console.client.post(url, headers=bearer(outsider), json={"reason": "x"})
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "alert_not_found"
    marked = console.client.post(url, headers=bearer(writer), json={"reason": "known vendor"})
    assert marked.status_code == 200, marked.text
    body = marked.json()
    assert body["alert"]["status"] == "resolved" and body["marks"][0]["kind"] == "new_network"
    assert len(_audit(console, key)) == 1


def test_a_kind_no_detector_learns_is_audited_but_teaches_nothing(console):
    from keytrail.schemas.timestamps import utc_now
    from keytrail.schemas.usage import Outcome
    from tests.factories import usage_event

    _, writer = console.new_key("proj-revoked", "project:write")
    key, _ = console.new_key("proj-revoked", name="leaked")
    console.pipeline.keystore.revoke(key, reason="leaked")
    console.pipeline.ingest([usage_event(key, at=utc_now(), seconds=-30, outcome=Outcome.REVOKED, status=401,
                                         project_id="proj-revoked")])
    listed = console.client.get("/v1/signals", headers=bearer(writer), params={"key_id": key, "since": "1h"})
    (signal,) = [r for r in listed.json()["rows"] if r["kind"] == "use_of_inactive_key"]
    marked = console.client.post(f"/v1/signals/{signal['signal_id']}/expected", headers=bearer(writer),
                                 json={"reason": "our own test of the revocation"})
    assert marked.status_code == 200, marked.text
    assert marked.json()["marks"][0]["learnt_by"] is None
    assert len(_audit(console, key)) == 1
    console.pipeline.ingest([usage_event(key, at=utc_now(), seconds=-10, project_id="proj-revoked",
                                         outcome=Outcome.REVOKED, status=401)])
    assert key not in console.pipeline.feedback.pending
