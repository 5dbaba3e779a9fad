"""The `aggregator` command line. Maps AggregatorError to a message and an exit code."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import click

from . import __version__
from . import config as config_mod
from .config import Config, parse_duration
from .errors import AggregatorError
from .model import utcnow
from .store import Store, WriterLock

if TYPE_CHECKING:
    from .pipeline import CycleSummary, FeedOutcome


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = config_mod.load(config_mod.resolve_path(self.config_path, os.environ))
        return self._config

    def open_store(self, *, sync: bool = False) -> Store:
        store = Store.open(self.config.database)
        if sync:
            store.sync_feeds(self.config.feeds, utcnow())
        return store


_MAX_COUNT = 1_000_000  # --limit and --min-sources: more than any database holds
_MAX_ID = (1 << 63) - 1  # SQLite's largest rowid


def _check_query(query: str | None, name: str) -> None:
    from .store import query_problem

    problem = query_problem(query) if query else None
    if problem:
        raise click.BadParameter(problem, param_hint=name)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except AggregatorError as exc:
        click.echo(f"aggregator: error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _write_file(path: Path, data: bytes, *, make_parents: bool = False) -> None:
    """Write an output file atomically; a file-system problem is a clean error, not a traceback.
    A folder the user named that does not exist is an error, not created."""
    from .digests import write_atomically

    try:
        write_atomically(path, data, make_parents=make_parents)
    except OSError as exc:
        click.echo(f"aggregator: error: cannot write {path}: {exc.strerror or exc}", err=True)
        sys.exit(1)


class _Group(click.Group):
    """Ctrl-C in any command exits 130 (128 + SIGINT, what shells expect) with one line,
    instead of click's "Aborted!" and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("aggregator: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $AGGREGATOR_CONFIG, else config/aggregator.toml).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.version_option(__version__, prog_name="aggregator")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """Poll feeds politely, store them in SQLite, and group the same story across outlets."""
    logging.basicConfig(
        level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    ctx.obj = Context(config_path)


def _duration(value: str | None) -> timedelta | None:
    if value is None:
        return None
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("urls", nargs=-1, metavar="[URL]...")
@click.option("--all", "poll_all", is_flag=True, help="Poll every active feed, due or not.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="When the daemon or another poll is writing to the database, wait for it "
    "to finish (--no-wait: exit 75 at once).",
)
@click.pass_obj
def poll(obj: Context, urls: tuple[str, ...], poll_all: bool, wait: bool) -> None:
    """Run one poll cycle: fetch due feeds, parse, cluster, store, print a summary.

    With URLs, poll just those feeds now (as --all does: backoff and caching hints are
    ignored, a Retry-After and a retirement are not)."""
    with _errors():
        config = obj.config
        # Opened first, so a database that cannot be used says so before any lock is tried;
        # the feeds are synced from the config only once this process is the writer.
        with obj.open_store() as store, WriterLock(config.database, "poll") as lock:
            lock.acquire(wait=wait, on_wait=lambda why: click.echo(f"aggregator: {why}", err=True))
            store.sync_feeds(config.feeds, utcnow())
            only = _feed_ids(store, urls) if urls else None
            if only is not None:
                _say_held(store, only)
            summary = run_poll(config, store, poll_all=poll_all or bool(urls), only=only)
        click.echo(summary.line())
        for url, kind, message in summary.failures[:20]:
            click.echo(f"  failed: {url}: {kind}: {message}")
        if len(summary.failures) > 20:
            click.echo(f"  ... and {len(summary.failures) - 20} more (see `aggregator feeds`)")


def _feed_ids(store: Store, urls: tuple[str, ...]) -> set[int]:
    """The ids of the configured feeds these URLs name (as configured or as moved to)."""
    rows = store.feed_rows()
    ids: set[int] = set()
    for url in urls:
        found = [r for r in rows if url in (r["url"], r["config_url"])]
        if not found:
            click.echo(
                f"aggregator: error: no feed with URL {url} in the config (see `aggregator feeds`)",
                err=True,
            )
            sys.exit(1)
        if not any(r["active"] for r in found):
            click.echo(f"aggregator: error: {url} is no longer in the config", err=True)
            sys.exit(1)
        ids.update(r["id"] for r in found if r["active"])
    return ids


def _say_held(store: Store, ids: set[int]) -> None:
    """Name each requested feed that even `poll URL` leaves alone (store.due_feeds decides
    which: a retirement, a binding Retry-After), and why."""
    due = {f.state.id for f in store.due_feeds(utcnow(), mode="all")}
    for r in store.feed_rows():
        if r["id"] in ids and r["id"] not in due:
            why = (
                "retired (410 Gone): `aggregator feeds reset URL` to poll it again"
                if r["retired_at"]
                else f"held by the server's Retry-After until {r['retry_after_until']}"
            )
            click.echo(f"aggregator: not polled: {r['url']}: {why}", err=True)


def run_poll(
    config: Config, store: Store, *, poll_all: bool, only: set[int] | None = None
) -> CycleSummary:
    """One cycle with a progress bar when stderr is a terminal."""
    # Imported here: the pipeline (httpx, the worker pool, the clusterer) is a sixth of a
    # second that `--version`, `feeds` and `stories` do not need.
    import asyncio

    from .pipeline import Poller

    mode = "all" if poll_all else "manual"
    due = len(
        [f for f in store.due_feeds(utcnow(), mode=mode) if only is None or f.state.id in only]
    )

    async def go(progress: Callable[[FeedOutcome], None] | None) -> CycleSummary:
        async with Poller(config, store) as poller:
            return await poller.run_cycle(mode=mode, progress=progress, only=only)

    if sys.stderr.isatty() and due > 1:
        with click.progressbar(length=due, label="polling", file=sys.stderr) as bar:
            return asyncio.run(go(lambda _o: bar.update(1)))
    return asyncio.run(go(None))


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@click.pass_context
def feeds(ctx: click.Context, as_json: bool) -> None:
    """Each feed's status: last success, last error, next poll."""
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    with _errors(), obj.open_store(sync=True) as store:
        for row in store.feed_rows():
            record = {
                k: row[k]
                for k in (
                    "id",
                    "url",
                    "title",
                    "feed_title",
                    "active",
                    "last_status",
                    "last_success_at",
                    "next_poll_at",
                    "error_count",
                    "error_kind",
                    "error_message",
                    "retired_at",
                    "state",
                )
            }
            if as_json:
                click.echo(json.dumps(record, ensure_ascii=False))
                continue
            name = row["title"] or row["feed_title"] or row["url"]
            state = row["state"]
            click.echo(f"{row['id']:>4}  {state:<12} {name}")
            click.echo(f"      {row['url']}")
            click.echo(
                f"      last success: {row['last_success_at'] or 'never'}   "
                f"next poll: {row['next_poll_at'] or 'now'}"
            )
            if row["error_count"]:
                click.echo(
                    f"      last error ({row['error_count']}x): {row['error_kind']}: "
                    f"{row['error_message']}"
                    + (f" [HTTP {row['last_status']}]" if row["last_status"] else "")
                )


@feeds.command("reset")
@click.argument("url")
@click.pass_obj
def feeds_reset(obj: Context, url: str) -> None:
    """Clear a feed's errors, backoff and retirement so it is polled at the next cycle."""
    with _errors(), obj.open_store(sync=True) as store:
        if not store.reset_feed(url):
            click.echo(f"aggregator: error: no feed with URL {url}", err=True)
            sys.exit(1)
        click.echo(f"reset {url}")


@main.command()
@click.option("--since", default=None, help="Only stories seen within this window, e.g. 24h.")
@click.option(
    "--min-sources",
    default=1,
    show_default=True,
    type=click.IntRange(1, _MAX_COUNT),
    help="Only stories carried by at least this many feeds.",
)
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, _MAX_COUNT))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per story.")
@click.pass_obj
def stories(obj: Context, since: str | None, min_sources: int, limit: int, as_json: bool) -> None:
    """List stories, biggest first, with their outlets."""
    window = _duration(since)
    with _errors(), obj.open_store() as store:
        cutoff = utcnow() - window if window else None
        for s in store.stories(since=cutoff, min_sources=min_sources, limit=limit):
            members = store.story_members(s["id"])
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "id": s["id"],
                            "title": s["title"],
                            "link": s["link"],
                            "first_seen": s["first_seen"],
                            "last_seen": s["last_seen"],
                            "member_count": s["member_count"],
                            "feed_count": s["feed_count"],
                            "sources": [
                                {
                                    "entry_id": m["id"],
                                    "outlet": m["outlet"],
                                    "title": m["title"],
                                    "link": m["link"],
                                    "rule": m["match_rule"],
                                }
                                for m in members
                            ],
                        },
                        ensure_ascii=False,
                    )
                )
                continue
            print_story(s, members)


def print_story(s: Any, members: list[Any]) -> None:
    click.echo(f"[{s['id']}] {s['title']}")
    click.echo(
        f"     {s['feed_count']} outlets, {s['member_count']} entries, first seen {s['first_seen']}"
    )
    for m in members:
        click.echo(f"     - {m['outlet']}: {m['title']}  ({m['match_rule']}, entry {m['id']})")


@main.command()
@click.argument("entry_id", type=click.IntRange(1, _MAX_ID))
@click.argument("other_id", type=click.IntRange(1, _MAX_ID), required=False)
@click.pass_obj
def explain(obj: Context, entry_id: int, other_id: int | None) -> None:
    """Say why an entry is in its story, or why two entries are or are not together."""
    from .pipeline import explain_pair

    with _errors(), obj.open_store() as store:
        entry = _show_entry(store, entry_id)
        headline = store.headline_reason(entry["story_id"]) if entry["story_id"] else None
        if headline is not None:
            click.echo(
                f"  story {entry['story_id']} shows the headline of entry {headline[0]}:"
                f" {headline[1]}"
            )
        if other_id is None:
            if not entry["matched_entry_id"]:
                return
            other_id = entry["matched_entry_id"]
            click.echo("  the entry it matched:")
        other = _show_entry(store, other_id)
        same = entry["story_id"] == other["story_id"]
        click.echo(f"together: {'yes, same story' if same else 'no, different stories'}")
        why = explain_pair(store, obj.config, entry_id, other_id)
        click.echo(f"why: {why.reason}")
        if why.distance is not None:
            click.echo(f"  simhash distance: {why.distance}")
        click.echo(f"  story similarity: {why.score}")
        click.echo(f"  shared terms: {', '.join(why.shared_terms[:12]) or '(none)'}")
        if why.guard:
            click.echo(f"  guard: {why.guard}")


def _emit(data: bytes, output: Path | None) -> None:
    """Bytes to stdout, or atomically to `output`."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_file(output, data)
        click.echo(f"wrote {output}", err=True)


def _show_entry(store: Store, entry_id: int) -> Any:
    """Print an entry and why it is in its story; exit 1 when there is no such entry."""
    entry = store.entry(entry_id)
    if entry is None:
        click.echo(f"aggregator: error: no entry {entry_id}", err=True)
        sys.exit(1)
    click.echo(f"entry {entry_id}: {entry['title']} ({entry['outlet']})")
    click.echo(f"  in story {entry['story_id']}: {_evidence(entry)}")
    return entry


def _evidence(row: Any) -> str:
    rule = row["match_rule"] or "unknown"
    words = {
        "new": "it founded the story",
        "url": "same canonical URL as",
        "content_hash": "identical text to",
        "simhash": "near-copy of",
        "story_match": "same event as",
    }.get(rule, rule)
    parts = [
        f"rule {rule} ({words}"
        + (f" entry {row['matched_entry_id']})" if row["matched_entry_id"] else ")")
    ]
    if row["match_distance"] is not None:
        parts.append(f"simhash distance {row['match_distance']}")
    if row["match_score"] is not None:
        parts.append(f"score {row['match_score']:.3f}")
    return ", ".join(parts)


@main.command()
@click.option("--port", default=None, type=int, help="Loopback port for the sample feeds.")
@click.pass_obj
def demo(obj: Context, port: int | None) -> None:
    """Serve bundled sample feeds on loopback, poll them twice, and show the top stories."""
    from .demo import run_demo

    path = obj.config_path or os.environ.get(config_mod.ENV_VAR) or "config/demo.toml"
    with _errors():
        run_demo(config_mod.load(Path(path)), port=port, echo=click.echo)


@main.command()
@click.argument("query")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, _MAX_COUNT))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per entry.")
@click.pass_obj
def search(obj: Context, query: str, limit: int, as_json: bool) -> None:
    """Full-text search over entries; any input is safe (every word must match)."""
    _check_query(query, "QUERY")
    with _errors(), obj.open_store() as store:
        for row in store.search(query, limit=limit):
            if as_json:
                click.echo(json.dumps(dict(row), ensure_ascii=False))
            else:
                click.echo(
                    f"{row['id']:>6}  story {row['story_id']:<6} {row['outlet']}: {row['title']}"
                )
                click.echo(f"        {row['snippet']}")


EXPORT_FORMATS = ("atom", "rss", "json", "html", "opml")


@main.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(EXPORT_FORMATS),
    default=None,
    help="atom (default), rss, json, html or opml; with --digest, the digest's own "
    "format unless given.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (atomically) instead of stdout.",
)
@click.option("--digest", "digest_name", help="Use the filters of this [[digests]] entry.")
@click.option("--since", default=None, help="Stories seen within this window (default 24h).")
@click.option("--min-sources", default=None, type=click.IntRange(1, _MAX_COUNT))
@click.option("--tag", "tags", multiple=True, help="Only stories from feeds with this tag.")
@click.option("--language", default=None)
@click.option("--query", default=None, help="Only stories matching this full-text query.")
@click.option("--limit", default=None, type=click.IntRange(1, _MAX_COUNT))
@click.pass_obj
def export(
    obj: Context,
    fmt: str | None,
    output: Path | None,
    digest_name: str | None,
    since: str | None,
    min_sources: int | None,
    tags: tuple[str, ...],
    language: str | None,
    query: str | None,
    limit: int | None,
) -> None:
    """Export stories as a digest (Atom, RSS, JSON Feed, HTML) or the subscriptions as OPML."""
    from dataclasses import replace

    _check_query(query, "'--query'")

    from .config import DigestSettings
    from .digests import build_digest
    from .export import opml_export, render

    with _errors():
        config = obj.config
        if fmt == "opml":
            data = opml_export(config.feeds, "aggregator subscriptions")
        else:
            base = DigestSettings(name="export", path=Path("-"), format=fmt or "atom")
            if digest_name:
                found = [d for d in config.digests if d.name == digest_name]
                if not found:
                    raise click.BadParameter(
                        f"no [[digests]] entry named {digest_name!r}", param_hint="--digest"
                    )
                base = replace(found[0], format=fmt or found[0].format)
            fmt = base.format
            window = _duration(since)
            settings = replace(
                base,
                since=int(window.total_seconds()) if window else base.since,
                min_sources=min_sources or base.min_sources,
                tags=tags or base.tags,
                language=language or base.language,
                query=query or base.query,
                limit=limit or base.limit,
            )
            with obj.open_store() as store:
                data = render(build_digest(store, settings, utcnow()), fmt)
        _emit(data, output)


@feeds.command("import")
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Feeds file to write (default: feeds.d/<name>.toml beside the config).",
)
@click.pass_obj
def feeds_import(obj: Context, opml_file: Path, output: Path | None) -> None:
    """Turn an OPML file into a feeds file that the config includes."""
    from .export import feeds_toml, opml_import

    with _errors():
        config_path = config_mod.resolve_path(obj.config_path, os.environ)
        skipped: list[str] = []
        imported = opml_import(opml_file.read_bytes(), str(opml_file), skipped)
        for why in skipped:
            click.echo(f"aggregator: warning: {opml_file}: skipped {why}", err=True)
        if not imported:
            click.echo(
                f"aggregator: error: {opml_file}: no feeds to import"
                + (f" ({len(skipped)} skipped)" if skipped else "")
                + "; nothing written",
                err=True,
            )
            sys.exit(1)
        target = output or config_path.parent / "feeds.d" / f"{opml_file.stem}.toml"
        text = _read_feeds_file(target)
        known = 0
        if text:
            # A feeds file that exists (`feeds add` writes the same default file) gains the
            # feeds it and the config do not have yet; nothing of it is replaced.
            subscribed = {f.url for f in config_mod.load(config_path).feeds}
            subscribed |= {f.url for f in config_mod.check_feeds(text, target)}
            fresh = [f for f in imported if f.url not in subscribed]
            known = len(imported) - len(fresh)
            imported = fresh
        # The default feeds.d/ folder is created; a folder named with -o must exist.
        if imported:
            _write_file(
                target,
                _appended(text, feeds_toml(imported)).encode("utf-8"),
                make_parents=output is None,
            )
        click.echo(
            f"wrote {len(imported)} feeds to {target}"
            + (f" ({known} already subscribed)" if known else "")
        )
        # Read afresh: an `include` glob may already cover the file just written.
        included = config_mod.load(config_path).includes
        if target.resolve() not in {p.resolve() for p in included}:
            rel = os.path.relpath(target.resolve(), config_path.resolve().parent)
            if config_mod.add_include(config_path, rel):
                click.echo(f'added include "{rel}" to {config_path}')
            else:
                click.echo(f'add "{rel}" to the include list of {config_path} to use them')
                return
        click.echo(
            "a running daemon picks them up at `systemctl reload aggregator` "
            "(or `kill -HUP` of its pid)"
        )


_SUBSCRIPTIONS = Path("feeds.d") / "subscriptions.toml"


def _read_feeds_file(path: Path) -> str:
    """A feeds file's text ('' when it does not exist yet); one clear line if unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except OSError as exc:
        click.echo(f"aggregator: error: cannot read {path}: {exc.strerror or exc}", err=True)
        sys.exit(1)


def _appended(text: str, tables: str) -> str:
    """A feeds file's text with `[[feeds]]` tables added after one blank line."""
    if not text or text.endswith("\n\n"):
        return text + tables
    return text + ("\n" if text.endswith("\n") else "\n\n") + tables


def _tell_daemon(config: Config) -> None:
    """SIGHUP the daemon running on the config's database (it re-reads its config), or say
    how to make it."""
    import signal

    from .store import DaemonPid

    pid = DaemonPid(config.database).running()
    if pid is not None:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            pass
        else:
            click.echo(f"told the running daemon (pid {pid}) to reload its config")
            return
    click.echo(
        "a running daemon picks this up at `systemctl reload aggregator` "
        "(or `kill -HUP` of its pid)"
    )


@feeds.command("add")
@click.argument("url")
@click.option("--title", default=None, help="Title to show instead of the feed's own.")
@click.option("--tag", "tags", multiple=True, help="A tag for the feed (repeatable).")
@click.option(
    "-f",
    "--file",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Feeds file to add it to (default: feeds.d/subscriptions.toml beside "
    "the config; included by the config, which gets the include line if needed).",
)
@click.option(
    "--pick",
    type=click.IntRange(1, 50),
    default=None,
    help="When a web page names several feeds, subscribe to the Nth one listed.",
)
@click.option(
    "--no-discover", is_flag=True, help="Subscribe to the URL as given, without fetching it first."
)
@click.pass_obj
def feeds_add(
    obj: Context,
    url: str,
    title: str | None,
    tags: tuple[str, ...],
    target: Path | None,
    pick: int | None,
    no_discover: bool,
) -> None:
    """Subscribe to a feed: add it to a feeds file the config includes. A web page's URL
    (https://www.lemonde.fr/) finds the feeds the page names, or one at a common path."""
    from .export import feeds_toml
    from .model import FeedSettings

    with _errors():
        config_path = config_mod.resolve_path(obj.config_path, os.environ)
        config = config_mod.load(config_path)
        target = target or config_path.parent / _SUBSCRIPTIONS
        try:
            normalised = config_mod.feed_url(url, Path.cwd())  # a path as the user typed it
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="URL") from None
        # A bad tag or title is refused before anything is fetched or written.
        config_mod.check_feeds(
            feeds_toml(
                [
                    FeedSettings(
                        url=normalised, title=title.strip() if title else None, tags=tuple(tags)
                    )
                ]
            ),
            target,
        )
        if (
            not no_discover
            and urlsplit(normalised).scheme in ("http", "https")
            and normalised not in {f.url for f in config.feeds}
        ):
            normalised = _discover(config, normalised, pick)
        if normalised in {f.url for f in config.feeds}:
            click.echo(f"aggregator: error: already subscribed to {normalised}", err=True)
            sys.exit(1)
        text = _read_feeds_file(target)
        feed = FeedSettings(
            url=normalised, title=title.strip() if title else None, tags=tuple(tags)
        )
        # A feeds file the config does not include yet may list the feed already.
        listed = text and normalised in {f.url for f in config_mod.check_feeds(text, target)}
        new_text = text if listed else _appended(text, feeds_toml([feed]))
        included = {p.resolve() for p in config.includes}
        try:
            if target.resolve() in included or target.resolve() == config_path.resolve():
                config_mod.rewrite_checked(config_path, target, new_text)
            else:
                _add_included(config_path, target, new_text)
        except OSError as exc:
            click.echo(f"aggregator: error: cannot write {target}: {exc.strerror or exc}", err=True)
            sys.exit(1)
        click.echo(f"subscribed to {normalised} (in {target})")
        _tell_daemon(config)


def _discover(config: Config, url: str, pick: int | None) -> str:
    """The feed to subscribe to for `url`: itself when it serves a feed, else the one its page
    names (the `pick`th of several), else one at a common path. Fetched through the polite,
    SSRF-guarded fetcher; every way of finding nothing ends with one line and exit 1."""
    import asyncio

    from .discover import common_candidates, feed_links, looks_like_feed, looks_like_html
    from .fetch import Fetcher
    from .model import FeedState

    async def fetch(fetcher: Fetcher, target: str) -> Any:
        return await fetcher.fetch(FeedState(id=0, url=target), utcnow())

    async def find() -> str:
        async with Fetcher(config.fetch, pages=True) as fetcher:
            page = await fetch(fetcher, url)
            if page.failure is not None:
                _fail(f"cannot fetch {url}: {page.failure.message}")
            body = page.body or b""
            if looks_like_feed(body):
                return url
            if not looks_like_html(body):
                _fail(f"{url} serves neither a feed nor an HTML page that could name one")
            links = feed_links(body, page.final_url)
            if not links:
                for candidate in common_candidates(page.final_url):
                    found = await fetch(fetcher, candidate)
                    if found.failure is None and looks_like_feed(found.body or b""):
                        click.echo(f"found a feed at {candidate}")
                        return candidate
                _fail(
                    f'no feed found for {url}: its page names none (no <link rel="alternate">'
                    " in its head) and none of /feed, /rss, /rss.xml, /atom.xml ... is one"
                )
            if len(links) == 1 and pick in (None, 1):
                click.echo(f"found a feed on the page: {links[0].url}")
                return links[0].url
            if pick is None or pick > len(links):
                click.echo(f"{url} names {len(links)} feeds:")
                for n, link in enumerate(links, 1):
                    click.echo(
                        f"  {n}. {link.url}  ({link.kind}"
                        + (f": {link.title}" if link.title else "")
                        + ")"
                    )
                _fail(
                    "pick one with --pick N"
                    if pick is None
                    else f"--pick {pick}: there are only {len(links)}"
                )
            return links[pick - 1].url

    return asyncio.run(find())


def _fail(message: str) -> NoReturn:
    click.echo(f"aggregator: error: {message}", err=True)
    sys.exit(1)


def _add_included(config_path: Path, target: Path, text: str) -> None:
    """Write a new feeds file and add it to the config's include list; when the config cannot
    be edited, keep the file and say which line to add."""
    config_mod.rewrite_checked(config_path, target, text)
    rel = os.path.relpath(target.resolve(), config_path.resolve().parent)
    if config_mod.add_include(config_path, rel):
        click.echo(f'added include "{rel}" to {config_path}')
    else:
        click.echo(f'add "{rel}" to the include list of {config_path} to use it')
        sys.exit(1)


@feeds.command("remove")
@click.argument("url")
@click.pass_obj
def feeds_remove(obj: Context, url: str) -> None:
    """Unsubscribe from a feed: take it out of the feeds file that lists it. Its entries stay
    in the database; the feed is marked inactive at the next poll or reload."""
    with _errors():
        config_path = config_mod.resolve_path(obj.config_path, os.environ)
        config = config_mod.load(config_path)
        urls = {f.url for f in config.feeds}
        try:
            normalised = url if url in urls else config_mod.feed_url(url, Path.cwd())
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="URL") from None
        if normalised not in urls:
            click.echo(f"aggregator: error: not subscribed to {normalised}", err=True)
            sys.exit(1)
        for path in dict.fromkeys(config.includes):
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                click.echo(
                    f"aggregator: error: cannot read {path}: {exc.strerror or exc}", err=True
                )
                sys.exit(1)
            left = config_mod.without_feed(text, normalised, path.resolve().parent)
            if left is None:
                continue
            try:
                config_mod.rewrite_checked(config_path, path, left)
            except OSError as exc:
                click.echo(
                    f"aggregator: error: cannot write {path}: {exc.strerror or exc}", err=True
                )
                sys.exit(1)
            click.echo(f"unsubscribed from {normalised} (removed from {path})")
            _tell_daemon(config)
            return
        click.echo(
            f"aggregator: error: {normalised} is listed in {config_path} itself; remove "
            "its [[feeds]] table there (the main config is never rewritten)",
            err=True,
        )
        sys.exit(1)


@main.command("datasette-metadata")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (atomically) instead of stdout.",
)
@click.pass_obj
def datasette_metadata(obj: Context, output: Path | None) -> None:
    """Datasette metadata (descriptions, facets, canned queries) for the configured database.

    Datasette names a database after its file's stem, and metadata applies by that name, so
    the bundled file (written for `aggregator.db`) is re-keyed to the configured file's stem.
    """
    from importlib.resources import files

    with _errors():
        config = obj.config
        metadata = json.loads(
            files("aggregator").joinpath("datasette_metadata.json").read_text(encoding="utf-8")
        )
        databases = metadata.get("databases", {})
        body: dict[str, Any] = databases.get("aggregator") or next(iter(databases.values()), {})
        metadata["databases"] = {config.database.stem: body}
        data = (json.dumps(metadata, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        _emit(data, output)


@main.command()
@click.option(
    "--dispatch-interval",
    default=15.0,
    show_default=True,
    hidden=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between looks for due feeds (tests use a short one).",
)
@click.option(
    "--housekeeping-delay",
    default=600.0,
    show_default=True,
    hidden=True,
    type=click.FloatRange(min=0.0),
    help="Seconds after start before the first prune/checkpoint (then daily).",
)
@click.option(
    "--stop-timeout",
    default=10.0,
    show_default=True,
    hidden=True,
    type=click.FloatRange(min=1.0),
    help="Seconds SIGTERM waits for in-flight polls before abandoning them.",
)
@click.option(
    "--metrics",
    "metrics_address",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics on /metrics and health on /healthz (off by"
    " default; a loopback address, e.g. 127.0.0.1:9464).",
)
@click.option(
    "--metrics-remote", is_flag=True, help="Allow --metrics on an address other machines can reach."
)
@click.pass_context
def run(
    ctx: click.Context,
    dispatch_interval: float,
    housekeeping_delay: float,
    stop_timeout: float,
    metrics_address: str | None,
    metrics_remote: bool,
) -> None:
    """Run as a daemon: poll due feeds, write digests, prune (systemd Type=notify).

    SIGHUP re-reads the config, SIGTERM/SIGINT stop within 10 s. Logs go to stderr, with
    syslog priorities when journald reads them. Without --log-level it logs at info.
    """
    from .service import ServiceOptions, run_service

    obj: Context = ctx.obj
    parent = ctx.parent
    level = "info"
    if parent is not None and parent.get_parameter_source("log_level") not in (
        None,
        click.core.ParameterSource.DEFAULT,
    ):
        level = parent.params["log_level"]
    path = config_mod.resolve_path(obj.config_path, os.environ)
    metrics = None
    if metrics_address is not None:
        from .metrics import parse_address

        try:
            metrics = parse_address(metrics_address, allow_remote=metrics_remote)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--metrics") from None
    options = ServiceOptions(
        dispatch_interval=dispatch_interval,
        housekeeping_delay=housekeeping_delay,
        stop_timeout=stop_timeout,
        metrics=metrics,
    )
    sys.exit(run_service(path, log_level=level, options=options))
