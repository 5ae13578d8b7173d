"""The on-disk spool: bounded, ordered, durable across restarts, two-phase reads."""

from __future__ import annotations

import os

import pytest

from keytrail.producers.spool import DiskSpool, SpoolError, record_size


def _records(count: int, prefix: str = "e") -> list[tuple[bytes, bytes]]:
    return [(f"key_{i % 3}".encode(), f'{{"n":"{prefix}{i}"}}'.encode()) for i in range(count)]


def _drain(spool: DiskSpool, batch: int = 7) -> list[tuple[bytes, bytes]]:
    out = []
    while True:
        read = spool.read(batch)
        if not read.records:
            return out
        out.extend(read.records)
        assert spool.commit(read)


def test_records_come_back_in_order_across_segments(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=200, buffer_bytes=64)
    records = _records(100)
    assert spool.append_many(records) == 100
    assert len(spool) == 100
    assert _drain(spool) == records
    assert spool.empty and spool.pending_bytes == 0
    assert not list(tmp_path.glob("*.seg")), "a drained spool keeps no segment files"
    spool.close()


def test_a_read_that_is_not_committed_is_read_again(tmp_path):
    spool = DiskSpool(tmp_path)
    spool.append_many(_records(10))
    first = spool.read(4)
    again = spool.read(4)
    assert first.records == again.records
    spool.commit(again)
    assert spool.read(100).records == _records(10)[4:]
    spool.close()


def test_bound_refuses_appends_past_max_bytes(tmp_path):
    one = record_size(b"key_0", b'{"n":"e0"}')
    spool = DiskSpool(tmp_path, max_bytes=one * 5)
    assert spool.append_many(_records(8)) == 5
    assert spool.pending_bytes <= spool.max_bytes
    assert not spool.append(b"k", b"v" * 10)
    spool.commit(spool.read(2))
    assert spool.append(b"key_0", b'{"n":"e0"}'), "room comes back once records are delivered"
    spool.close()


def test_pending_records_survive_a_restart_and_committed_ones_do_not(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=150)
    records = _records(30)
    spool.append_many(records)
    spool.commit(spool.read(12))
    spool.close()
    reopened = DiskSpool(tmp_path, segment_bytes=150)
    assert len(reopened) == 18
    reopened.append(b"key_9", b"late")
    assert _drain(reopened) == records[12:] + [(b"key_9", b"late")]
    reopened.close()


def test_a_torn_record_at_the_end_is_cut_off_on_open(tmp_path):
    spool = DiskSpool(tmp_path)
    spool.append_many(_records(5))
    spool.close()
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with open(segment, "ab") as handle:
        handle.write(b"\x40\x00\x00\x00\x01\x02")  # a header promising 64 bytes, then a crash
    reopened = DiskSpool(tmp_path)
    assert len(reopened) == 5
    assert _drain(reopened) == _records(5)
    reopened.close()


def test_prepend_puts_older_records_in_front_of_pending_ones(tmp_path):
    spool = DiskSpool(tmp_path, segment_bytes=120)
    newer = _records(6, "new")
    spool.append_many(newer)
    spool.commit(spool.read(2))  # the head segment is partly consumed
    older = _records(3, "old")
    assert spool.prepend(older) == 3
    assert _drain(spool, batch=2) == older + newer[2:]
    spool.close()


def test_prepend_on_an_empty_spool_goes_before_buffered_appends(tmp_path):
    spool = DiskSpool(tmp_path)
    spool.append(b"k", b"newest")
    spool.prepend([(b"k", b"older")])
    assert [v for _, v in spool.read(10).records] == [b"older", b"newest"]
    spool.close()


def test_a_batch_read_before_a_prepend_is_not_committed(tmp_path):
    spool = DiskSpool(tmp_path)
    spool.append_many(_records(4))
    stale = spool.read(2)
    spool.prepend([(b"k", b"older")])
    assert not spool.commit(stale)
    assert [v for _, v in spool.read(1).records] == [b"older"]
    spool.close()


def test_one_process_per_directory_and_claim_takes_the_next_slot(tmp_path):
    first = DiskSpool(tmp_path / "a")
    with pytest.raises(SpoolError, match="in use"):
        DiskSpool(tmp_path / "a")
    first.close()
    slot0 = DiskSpool.claim(tmp_path / "base")
    slot1 = DiskSpool.claim(tmp_path / "base")
    assert (slot0.directory.name, slot1.directory.name) == ("slot-0", "slot-1")
    slot0.close()
    slot1.close()


@pytest.mark.parametrize("policy", ["always", "never", "interval"])
def test_every_fsync_policy_keeps_data_after_close(tmp_path, policy):
    spool = DiskSpool(tmp_path, fsync=policy)
    spool.append_many(_records(3))
    spool.flush()
    spool.close()
    assert len(DiskSpool(tmp_path)) == 3


def test_unwritable_directory_is_a_clear_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(SpoolError, match="cannot use spool directory"):
        DiskSpool(target / "spool")
    assert os.path.exists(target)
