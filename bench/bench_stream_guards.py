"""CPU per event of the worker's two guards (write scope, secret scrub) beside decode in the same run.

Run: PYTHONPATH=. .venv/bin/python bench/bench_stream_guards.py (50k single-event records, 2,000 keys)."""
import time, uuid
from keytrail.schemas.batch_codec import decode_batch
from keytrail.schemas.codec import encode_usage_event
from keytrail.schemas.secrets import scrub_events
from keytrail.stream_processors.write_scope import refuse_out_of_scope
from tests.factories import usage_event
N=50_000
raw=[(encode_usage_event(usage_event(f"key_{i%2000}", seconds=i*0.1, event_id=uuid.uuid4(), project_id="proj_a")), 0, i) for i in range(N)]
for rep in range(3):
    t0=time.perf_counter(); b=decode_batch(raw); t1=time.perf_counter()
    owners={f"key_{i}":"proj_a" for i in range(2000)}
    refuse_out_of_scope(b, owners, lambda p: False); t2=time.perf_counter()
    scrub_events(b.events); t3=time.perf_counter()
    print(f"decode {1e6*(t1-t0)/N:.2f} us/ev  scope {1e6*(t2-t1)/N:.2f} us/ev  scrub {1e6*(t3-t2)/N:.2f} us/ev")
