"""A project-scoped caller can neither read nor change another project's keys."""

import pytest

from keytrail.keystore import Caller, KeyFilter, KeyNotFound, PermissionDenied
from keytrail.schemas.keys import KeyStatus
from keytrail.schemas.usage import Outcome


@pytest.fixture
def keys(store, project):
    """One key in the caller's project, one in another project."""
    own, _ = store.create_key("own", project)
    foreign, foreign_secret = store.create_key("foreign", f"{project}-other", expires_in="7d")
    return own, foreign, foreign_secret


def test_a_project_caller_cannot_read_another_projects_key(store, project, keys):
    own, foreign, _ = keys
    reader = Caller.project(project, actor="svc-reader")
    assert store.get(own.id, caller=reader).id == own.id
    with pytest.raises(KeyNotFound):
        store.get(foreign.id, caller=reader)
    with pytest.raises(KeyNotFound):
        store.lifecycle_events(foreign.id, caller=reader)


def test_a_project_caller_lists_only_its_own_keys(store, project, keys):
    own, foreign, _ = keys
    reader = Caller.project(project, actor="svc-reader")
    assert [key.id for key in store.list_keys(caller=reader)] == [own.id]
    with pytest.raises(PermissionDenied):
        store.list_keys(KeyFilter(project_id=foreign.project_id), caller=reader)


def test_a_project_caller_cannot_change_another_projects_key(store, project, keys):
    _, foreign, foreign_secret = keys
    writer = Caller.project(project, actor="svc-writer", write=True)
    attempts = {
        "update": lambda: store.update_key(foreign.id, caller=writer, name="mine now"),
        "disable": lambda: store.disable(foreign.id, caller=writer),
        "revoke": lambda: store.revoke(foreign.id, caller=writer),
        "rotate": lambda: store.rotate(foreign.id, caller=writer),
        "renew": lambda: store.renew(foreign.id, caller=writer),
        "purge": lambda: store.purge(foreign.id, caller=writer),
    }
    for name, attempt in attempts.items():
        with pytest.raises(KeyNotFound):
            attempt()
        assert store.get(foreign.id).status is KeyStatus.ACTIVE, name
    assert store.get(foreign.id).name == "foreign"
    assert store.verify(foreign_secret).outcome is Outcome.OK


def test_a_project_caller_cannot_create_keys_in_another_project(store, project):
    writer = Caller.project(project, actor="svc-writer", write=True)
    with pytest.raises(PermissionDenied) as refused:
        store.create_key("k", f"{project}-other", caller=writer)
    assert refused.value.code == "permission_denied"
    assert store.list_keys(KeyFilter(project_id=f"{project}-other")) == []


def test_a_read_only_caller_cannot_change_its_own_keys(store, project, keys):
    own, _, _ = keys
    reader = Caller.project(project, actor="svc-reader")
    with pytest.raises(PermissionDenied, match="read-only"):
        store.revoke(own.id, caller=reader)
    with pytest.raises(PermissionDenied):
        store.create_key("k", project, caller=reader)
    assert store.get(own.id).status is KeyStatus.ACTIVE


def test_bulk_renewal_by_a_project_caller_stays_in_its_project(store, project, keys):
    _, foreign, _ = keys
    own_expiring, _ = store.create_key("own-expiring", project, expires_in="7d")
    writer = Caller.project(project, actor="svc-writer", write=True)
    renewed = store.renew_expiring(30, caller=writer)
    assert [key.id for key in renewed] == [own_expiring.id]
    assert store.get(foreign.id).expires_at == foreign.expires_at


def test_a_project_writer_acts_under_its_own_name(store, sink, project):
    writer = Caller.project(project, actor="svc-writer", write=True)
    store.create_key("k", project, caller=writer)
    assert sink.events[-1].actor == "svc-writer"
