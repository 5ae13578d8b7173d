"""A route the key never called before."""

from datetime import timedelta

from keytrail.schemas.signals import Severity, SignalKind
from keytrail.stream_processors.detectors import NewRouteDetector
from tests.detectors.scenarios import START, event, run, steady

AFTER = START + timedelta(days=21, hours=10, minutes=3)


def test_first_write_by_a_read_only_key_is_high_and_names_the_route():
    history = steady("key_r", days=21)
    new = event("key_r", AFTER, ip="203.0.113.7", method="DELETE", route="/v1/orders/{order_id}")
    signals, _ = run([NewRouteDetector()], history + [new])
    (signal,) = signals
    assert signal.kind is SignalKind.NEW_ROUTE and signal.severity is Severity.HIGH
    assert signal.evidence["routes"] == ["DELETE /v1/orders/{order_id}"]
    assert signal.evidence["ips"] == ["203.0.113.7"]
    assert set(signal.evidence["known_routes"]) == {"GET /v1/orders/{order_id}", "GET /v1/orders"}
    assert "key_r called DELETE /v1/orders/{order_id} on orders-api for the first time" in signal.message
    assert "first write" in signal.message


def test_new_read_route_is_low_and_new_write_route_of_a_writer_is_medium():
    history = steady("key_r", days=14, routes=(("GET", "/v1/orders"), ("POST", "/v1/orders")))
    signals, _ = run([NewRouteDetector()], history + [
        event("key_r", AFTER, route="/v1/invoices"),
        event("key_r", AFTER + timedelta(hours=1), method="PUT", route="/v1/orders/{order_id}"),
    ])
    assert [(s.severity, s.evidence["routes"]) for s in signals] == [
        (Severity.LOW, ["GET /v1/invoices"]),
        (Severity.MEDIUM, ["PUT /v1/orders/{order_id}"]),
    ]


def test_same_route_on_another_service_is_a_new_route():
    history = steady("key_r", days=14)
    signals, _ = run([NewRouteDetector()], history + [event("key_r", AFTER, service="billing-api")])
    assert len(signals) == 1 and "billing-api" in signals[0].message


def test_quiet_during_learning():
    events = steady("key_r", days=6) + [event("key_r", START + timedelta(days=6), method="DELETE", route="/v1/x")]
    assert run([NewRouteDetector()], events)[0] == []


def test_untemplated_routes_make_the_key_nomadic_and_quiet():
    history = steady("key_r", days=14)
    raw = [event("key_r", AFTER + timedelta(minutes=i), route=f"/v1/orders/{1000 + i}") for i in range(300)]
    signals, states = run([NewRouteDetector()], history + raw)
    assert len(signals) == 1  # the first one, in the first hour; from the sixth new route on, nomadic
    assert len(states["key_r"].detector_state["new_route"]["r"]) == 16
