"""`keytrail demo`: the whole product on the embedded default, with a story worth watching.

It starts the console (`keytrail serve`: API, ingest, dashboard) in this process on its own data
directory, creates projects and keys, backfills weeks of simulated history so every detector has
a baseline, then plays a "live" phase in compressed event time (`--speed`) in which a leaked key,
a revoked key, a dormant key and a probed key misbehave, one key sits idle and one is about to
expire. It prints what KeyTrail caught, per incident, when it stops (`--duration` or Ctrl-C).
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keytrail.console.demo_story.cast import DAY, SCENES, Actor, cast, normal_traffic, scene_events
from keytrail.keystore.store import KeyStore
from keytrail.schemas.usage import KeyUsageEvent, Outcome
from keytrail.settings import RunMode, Settings, get_settings

DEFAULT_PORT = 8477
STORY_SECONDS = 60.0
"""Wall-clock length of the live story when the demo runs until Ctrl-C."""
MIN_LIVE_SPAN = timedelta(minutes=40)
"""Simulated length the live phase needs: minute-driven detectors judge a minute ~6 min after it."""
INGEST_BATCH = 20_000
TICK_SECONDS = 0.5
STORY_SETTLE = timedelta(minutes=8)
"""Simulated time after the last scene until its minute-driven signals are in."""
STATUS_EVERY_SECONDS = 5.0
IDLE_STATUS_SECONDS = 30.0
SCAN_EVERY_SECONDS = 5.0


@dataclass
class KeyOutcome:
    """What KeyTrail raised for one demo key."""

    slug: str
    key_id: str
    project: str
    incident: str
    expect_signals: list[str]
    expect_alerts: list[str]
    signals: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    @property
    def caught(self) -> bool:
        return set(self.expect_signals) <= set(self.signals) and set(self.expect_alerts) <= set(self.alerts)

    @property
    def quiet(self) -> bool:
        return not self.signals and not self.alerts


@dataclass
class DemoReport:
    """The demo's result: per key what was raised, and how long it took."""

    url: str
    data_dir: str
    events: int = 0
    backfill_seconds: float = 0.0
    first_signal_seconds: float | None = None
    first_alert_seconds: float | None = None
    all_caught_seconds: float | None = None
    keys: list[KeyOutcome] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for entry, key in zip(data["keys"], self.keys, strict=True):
            entry["caught"], entry["quiet"] = key.caught, key.quiet
        return data


# --------------------------------------------------------------------------- the server


def free_port(preferred: int = DEFAULT_PORT, host: str = "127.0.0.1") -> int:
    """`preferred` when it is free, otherwise any free port."""
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError("no free TCP port")


class DemoServer:
    """`keytrail serve` (the console app) on uvicorn in a background thread, around our pipeline."""

    def __init__(self, settings: Settings, host: str, port: int) -> None:
        import uvicorn

        from keytrail.console.api import create_app
        from keytrail.console.embedded import EmbeddedPipeline

        self.pipeline = EmbeddedPipeline(settings)
        self.app = create_app(settings, pipeline=self.pipeline)
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="keytrail-demo-server", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 60.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the console did not start on {self.url}")
            time.sleep(0.05)

    @property
    def runtime(self):  # noqa: ANN201 - console.api.runtime.ConsoleRuntime
        return self.app.state.console

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.pipeline.close()


# --------------------------------------------------------------------------- the demo


def demo_settings(settings: Settings, data_dir: Path) -> Settings:
    """The embedded default on the demo's own data directory (chDB + SQLite), whatever else is set."""
    return settings.model_copy(update={
        "mode": RunMode.EMBEDDED,
        "data_dir": data_dir,
        "clickhouse_url": f"chdb://{data_dir / 'chdb'}",
        "keystore_url": f"sqlite:///{data_dir / 'keys.db'}",
    })


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Demo:
    """One run of the demo story against a running console."""

    def __init__(self, settings: Settings, *, duration: float | None, speed: float, host: str, port: int,
                 console: Console, browser_hint: bool = True, seed: int = 7) -> None:
        self.base_settings = settings
        self.data_dir = settings.data_dir / "demo"
        self.settings = demo_settings(settings, self.data_dir)
        self.duration = duration
        self.speed = speed
        self.host = host
        self.port = port
        self.console = console
        self.browser_hint = browser_hint
        self.rng = random.Random(seed)
        self.actors = cast()
        self.by_slug = {a.slug: a for a in self.actors}
        self.events = 0
        self.seen_signals: set[str] = set()
        self.seen_alerts: set[str] = set()
        self.started = time.monotonic()
        self.live_began = self.started
        self.report: DemoReport | None = None
        self.sim_now = datetime.now(UTC)
        self.server: DemoServer | None = None
        self.story_store: KeyStore | None = None
        self.story_complete_at: datetime | None = None

    # ------------------------------------------------------------------ set-up
    def _sim_clock(self) -> datetime:
        return _ms(self.sim_now)

    def start(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self.port = self.port or free_port(DEFAULT_PORT, self.host)
        self.console.print(f"[bold]KeyTrail demo[/]: starting the console on the embedded default "
                           f"(chDB + SQLite in {self.data_dir}) ...")
        self.server = DemoServer(self.settings, self.host, self.port)
        self.server.start()
        self.report = DemoReport(url=self.server.url, data_dir=str(self.data_dir.resolve()))
        # Keys are created and revoked in simulated time through a second handle on the same store,
        # so their created_at and revocation fit the story; verification follows the same clock.
        self.story_store = KeyStore.open(
            self.settings.keystore_url, self.settings.hashing_secret(), env=self.settings.key_env,
            clock=self._sim_clock, cache_ttl_seconds=0.0, negative_cache_ttl_seconds=0.0,
            lifecycle_sink=getattr(self.server.pipeline, "audit_trail", None),  # the lifecycle audit in chDB
        )

    def _create_keys(self, live_start: datetime) -> None:
        assert self.story_store is not None and self.server is not None
        for actor in self.actors:
            self.sim_now = live_start - actor.active_from - timedelta(hours=2)
            expires_at = datetime.now(UTC) + actor.expires_in if actor.expires_in else None
            record, secret = self.server.runtime.run(  # under the pipeline lock: the audit trail writes to chDB
                self.story_store.create_key,
                actor.slug, actor.project, actor="keytrail-demo", owner=f"{actor.slug}@example.com",
                scopes=["read", "write"], expires_in="never", expires_at=expires_at,
            )
            actor.key_id, actor.secret = record.id, secret

    def _ingest(self, events: list[KeyUsageEvent]) -> None:
        if events:
            events.sort(key=lambda e: e.occurred_at)
            assert self.server is not None
            result = self.server.runtime.ingest(events)
            self.events += len(result.accepted)

    def _outcome(self, actor: Actor) -> Outcome:
        """What the service's key check says about the actor's key right now (simulated time)."""
        assert self.story_store is not None
        return Outcome(self.story_store.verify(actor.secret).outcome.value)

    def backfill(self, live_start: datetime) -> None:
        """Weeks of event-time history, day by day, so the detectors have learnt every key."""
        first = min(live_start - a.active_from for a in self.actors)
        days = (live_start - first) // DAY + 1
        began = time.monotonic()
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                   TextColumn("{task.fields[events]:>9,} events"), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task("backfilling history", total=days, events=0)
            pending: list[KeyUsageEvent] = []
            day_start = first
            while day_start < live_start:
                day_end = min(day_start + DAY, live_start)
                for actor in self.actors:
                    begin = max(day_start, live_start - actor.active_from)
                    end = day_end if actor.active_until is None else min(day_end, live_start - actor.active_until)
                    if begin < end:
                        pending.extend(normal_traffic(self.rng, actor, begin, end))
                if len(pending) >= INGEST_BATCH:
                    self._ingest(pending)
                    pending = []
                day_start = day_end
                progress.update(task, advance=1, events=self.events + len(pending))
            self._ingest(pending)
            progress.update(task, completed=days, events=self.events)
        assert self.report is not None
        self.report.backfill_seconds = round(time.monotonic() - began, 1)

    # ------------------------------------------------------------------ live phase
    def live(self, live_start: datetime, span: timedelta, stop_at: float | None) -> None:
        scenes = sorted(SCENES, key=lambda s: s.at)
        self.story_complete_at = live_start + span * scenes[-1].at + STORY_SETTLE
        wall_start = time.monotonic()
        previous = live_start
        last_status = last_scan = 0.0
        last_events = -1
        for actor in self.actors:
            actor.per_minute = actor.live_per_minute or actor.per_minute
        self._scan()
        while stop_at is None or time.monotonic() < stop_at:
            elapsed = time.monotonic() - wall_start
            now = min(live_start + timedelta(seconds=elapsed * self.speed), datetime.now(UTC))
            if now <= previous:
                time.sleep(TICK_SECONDS)
                continue
            batch: list[KeyUsageEvent] = []
            while scenes and live_start + span * scenes[0].at <= now:
                scene = scenes.pop(0)
                self._play(scene.actor, scene.what, live_start + span * scene.at, batch)
            for actor in self.actors:
                if actor.active_until is not None:
                    continue
                self.sim_now = previous
                outcome = self._outcome(actor)
                batch.extend(normal_traffic(self.rng, actor, previous, now, outcome))
            self.sim_now = now
            self._ingest(batch)
            previous = now
            if time.monotonic() - last_scan >= SCAN_EVERY_SECONDS:
                self._scan()
                last_scan = time.monotonic()
            self._announce()
            quiet_for = time.monotonic() - last_status
            if quiet_for >= STATUS_EVERY_SECONDS and (self.events != last_events or quiet_for >= IDLE_STATUS_SECONDS):
                self._status(now)
                last_status, last_events = time.monotonic(), self.events
            time.sleep(TICK_SECONDS)

    def _play(self, slug: str, what: str, at: datetime, batch: list[KeyUsageEvent]) -> None:
        actor = self.by_slug[slug]
        if what == "revoke":
            assert self.story_store is not None
            self.sim_now = at
            assert self.server is not None
            self.server.runtime.run(self.story_store.revoke, actor.key_id, actor="keytrail-demo",
                                    reason="suspected leak (demo)")
            self.console.print(f"[yellow]▶ {at:%a %H:%M} sim[/]  {actor.slug}: key revoked by its owner; "
                               "a forgotten cron job keeps calling with it")
            return
        self.console.print(f"[yellow]▶ {at:%a %H:%M} sim[/]  {actor.slug}: {actor.headline}")
        batch.extend(scene_events(self.rng, actor, what, at))

    def _scan(self) -> None:
        assert self.server is not None
        alerts = self.server.pipeline.alerts
        if alerts is not None:
            self.server.runtime.run(alerts.scan)

    # ------------------------------------------------------------------ reading back
    def _findings(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        assert self.server is not None
        keys = [a.key_id for a in self.actors]
        signals = self.server.runtime.query(
            "SELECT toString(signal_id) AS id, key_id, kind, toString(severity) AS severity, message "
            "FROM signals FINAL WHERE key_id IN {keys:Array(String)} ORDER BY detected_at",
            {"keys": keys},
        )
        alerts = self.server.runtime.query(
            "SELECT alert_id AS id, key_id, rule, toString(severity) AS severity, toString(status) AS status, "
            "message FROM alerts FINAL WHERE key_id IN {keys:Array(String)} ORDER BY opened_at",
            {"keys": keys},
        )
        return signals, alerts

    def _announce(self) -> None:
        signals, alerts = self._findings()
        names = {a.key_id: a.slug for a in self.actors}
        assert self.report is not None
        elapsed = round(time.monotonic() - self.live_began, 1)
        for row in signals:
            if row["id"] not in self.seen_signals:
                self.seen_signals.add(row["id"])
                self.report.first_signal_seconds = self.report.first_signal_seconds or elapsed
                self.console.print(f"  [magenta]signal[/] {row['kind']:<20} {row['severity']:<8} "
                                   f"{names[row['key_id']]:<17} {_first_sentence(row['message'])}", soft_wrap=True)
        for row in alerts:
            if row["id"] not in self.seen_alerts:
                self.seen_alerts.add(row["id"])
                self.report.first_alert_seconds = self.report.first_alert_seconds or elapsed
                self.console.print(f"  [red]alert [/] {row['rule']:<20} {row['severity']:<8} "
                                   f"{names[row['key_id']]:<17} {_first_sentence(row['message'])}", soft_wrap=True)
        if self.report.all_caught_seconds is None and all(k.caught for k in self._outcomes(signals, alerts)
                                                          if k.incident):
            self.report.all_caught_seconds = elapsed

    def _outcomes(self, signals: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> list[KeyOutcome]:
        outcomes = []
        for actor in self.actors:
            outcomes.append(KeyOutcome(
                slug=actor.slug, key_id=actor.key_id, project=actor.project, incident=actor.incident,
                expect_signals=list(actor.expect_signals), expect_alerts=list(actor.expect_alerts),
                signals=sorted({r["kind"] for r in signals if r["key_id"] == actor.key_id}),
                alerts=sorted({r["rule"] for r in alerts if r["key_id"] == actor.key_id}),
            ))
        return outcomes

    def _status(self, now: datetime) -> None:
        self.console.print(
            f"[dim]{datetime.now(UTC):%H:%M:%S}[/] simulated time [bold]{now:%a %d %b %H:%M}[/] UTC · "
            f"{self.events:,} events · {len(self.actors)} demo keys · {len(self.seen_signals)} signals · "
            f"{len(self.seen_alerts)} alerts   [dim]({self.report.url if self.report else ''})[/]"
        )

    def where_to_look(self) -> None:
        assert self.report is not None and self.server is not None
        url = self.report.url
        key_file = self.data_dir / "admin.key"
        admin = self.server.app.state.bootstrap_admin_key or "(see the file)"
        leaked = self.by_slug["partner-feed"].key_id
        auth = f'-H "Authorization: Bearer $(cat {key_file})"'
        self.console.rule("[bold]where to look")
        hint = "open" if self.browser_hint else "dashboard:"
        self.console.print(f"{hint} [bold cyan]{url}/[/] and sign in with the admin key (demo data only):\n"
                           f"  {admin}\n  (also in {key_file}; API docs at {url}/docs)")
        self.console.print("Three security questions, answered by the running server's API:")
        self.console.print(f"  # what needs a human now?\n  curl -s {auth} '{url}/v1/alerts?status=open'", soft_wrap=True)
        self.console.print(f"  # where was the leaked partner key used from?\n"
                           f"  curl -s {auth} '{url}/v1/usage/key_networks?key_id={leaked}'", soft_wrap=True)
        self.console.print(f"  # is anyone still using a revoked, expired or disabled key?\n"
                           f"  curl -s {auth} '{url}/v1/usage/inactive_key_use'", soft_wrap=True)
        self.console.rule()

    # ------------------------------------------------------------------ the whole run
    def run(self) -> DemoReport:
        story_wall = self.duration if self.duration is not None else STORY_SECONDS
        if story_wall * self.speed < MIN_LIVE_SPAN.total_seconds():
            self.speed = MIN_LIVE_SPAN.total_seconds() / story_wall
            self.console.print(f"[dim]speed raised to {self.speed:g}x so the story ({MIN_LIVE_SPAN} simulated) "
                               "fits in the live phase[/]")
        span = timedelta(seconds=story_wall * self.speed)
        try:
            self.start()
            live_start = _ms(datetime.now(UTC) - span)
            self._create_keys(live_start)
            self.console.print(f"created {len(self.actors)} keys in projects shop, payments and search; "
                               f"history starts {max(a.active_from for a in self.actors).days} days back")
            self.backfill(live_start)
            self.where_to_look()
            self.console.print(f"live: simulated time runs at {self.speed:g}x from {live_start:%a %H:%M} UTC "
                               f"({span} of story), then follows the clock; "
                               + ("Ctrl-C to stop" if self.duration is None else f"stops after {self.duration:g} s"))
            self.live_began = time.monotonic()
            stop_at = None if self.duration is None else self.live_began + self.duration
            self.live(live_start, span, stop_at)
        except KeyboardInterrupt:
            self.console.print("\n[bold]stopping[/] (Ctrl-C)")
        finally:
            self.finish()
        assert self.report is not None
        return self.report

    def finish(self) -> None:
        if self.server is not None and self.report is not None:
            try:
                self._scan()
                self._announce()
                signals, alerts = self._findings()
                self.report.keys = self._outcomes(signals, alerts)
                self.report.events = self.events
                complete = self.story_complete_at is not None and self.sim_now >= self.story_complete_at
                self.console.print(caught_table(self.report, complete=complete))
                self.console.print(timings(self.report))
            finally:
                if self.story_store is not None:
                    self.story_store.close()
                self.server.stop()
                self.console.print(f"stopped; the demo's data stays in {self.data_dir} until the next run")


def _first_sentence(message: str, limit: int = 110) -> str:
    sentence = message.split(". ")[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def caught_table(report: DemoReport, *, complete: bool = True) -> Table:
    """Per incident what was raised; `complete=False` (stopped before the story ended) says
    "not yet" instead of "missed"."""
    table = Table(title=f"What KeyTrail caught ({report.events:,} events)")
    for column in ("incident", "key", "signals", "alerts", "verdict"):
        table.add_column(column)
    for key in sorted(report.keys, key=lambda k: (not k.incident, k.slug)):
        if key.incident:
            verdict = "[green]caught[/]" if key.caught else "[red]missed[/]" if complete else "[yellow]not yet[/]"
        else:
            verdict = "[green]quiet[/]" if key.quiet else "[red]false alarm[/]"
        table.add_row(key.incident or "normal traffic", key.slug, ", ".join(key.signals) or "-",
                      ", ".join(key.alerts) or "-", verdict)
    return table


def timings(report: DemoReport) -> str:
    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:g} s"

    return (f"backfill {seconds(report.backfill_seconds)}; after the live phase began: first alert "
            f"{seconds(report.first_alert_seconds)}, first signal {seconds(report.first_signal_seconds)}, "
            f"every incident caught {seconds(report.all_caught_seconds)}")


def run_demo(settings: Settings, *, duration: float | None = None, speed: float = 60.0, host: str = "127.0.0.1",
             port: int = 0, console: Console | None = None, browser_hint: bool = True) -> DemoReport:
    """Run the demo (until `duration` seconds or Ctrl-C) and return what was caught."""
    demo = Demo(settings, duration=duration, speed=speed, host=host, port=port,
                console=console or Console(), browser_hint=browser_hint)
    return demo.run()


def demo_command(
    duration: Annotated[
        float | None, typer.Option(min=1, help="stop after this many seconds of live story, after the backfill (default: until Ctrl-C)")
    ] = None,
    speed: Annotated[
        float, typer.Option(min=2, help="simulated seconds per real second in the live phase")
    ] = 60.0,
    port: Annotated[int, typer.Option(min=0, max=65535, help="console port (0: 8477 if free, else any)")] = 0,
    no_browser_hint: Annotated[
        bool, typer.Option("--no-browser-hint", help="do not suggest opening the dashboard")
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="write what was caught as JSON to this file (for CI)")
    ] = None,
) -> None:
    """The whole product on the embedded default: keys, weeks of traffic, incidents, and what KeyTrail caught."""
    result = run_demo(get_settings(), duration=duration, speed=speed, port=port,
                      browser_hint=not no_browser_hint)
    if report is not None:
        report.write_text(json.dumps(result.to_json(), indent=2, default=str))
    missed = [k.slug for k in result.keys if (k.incident and not k.caught) or (not k.incident and not k.quiet)]
    if duration is not None and missed:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(demo_command)
