"""A feed's own request options: extra headers, a user agent, HTTP basic auth (issue 16).

Real polls through `aggregator poll` against real loopback servers; the secrets come from a
file and the environment, and must reach only the feed's own origin, never the database,
the logs or `feeds --json`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from aggregator import config as config_mod
from aggregator.model import Secret
from aggregator.service import config_changes
from tests.httpserver import LoopbackServer, Request, Response

CLI = [sys.executable, "-m", "aggregator"]
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>Members</title>
<link>http://members.example/</link><description>d</description>
<item><guid>m1</guid><title>Quarterly newsletter for members is out</title>
<link>http://members.example/1</link><pubDate>Mon, 28 Oct 2024 08:00:00 GMT</pubDate></item>
</channel></rss>"""
PASSWORD = "hunter2-üñí"
API_KEY = "key-5f0c1e9d"
COOKIE = "session=9b2d77"


def run(
    config: Path,
    *args: str,
    code: int = 0,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEMBERS_API_KEY": API_KEY, **(env_extra or {})}
    result = subprocess.run(
        [*CLI, "--config", str(config), "--log-level", "debug", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "members.pass").write_text(PASSWORD + "\n", encoding="utf-8")
    config = tmp_path / "aggregator.toml"
    config.write_text(
        '[storage]\ndatabase = "agg.db"\n\n[fetch]\nallow_private_networks = true\n\n'
        f'[[feeds]]\nurl = "{url}"\nuser_agent = "MembersReader/2.1"\n'
        f'headers = {{ "X-Api-Key" = {{ env = "MEMBERS_API_KEY" }}, Cookie = "{COOKIE}" }}\n'
        'auth = { username = "ada", password_file = "members.pass" }\n' + extra,
        encoding="utf-8",
    )
    return config


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_feeds_headers_user_agent_and_basic_auth_reach_it(
    tmp_path: Path, server: LoopbackServer
) -> None:
    def members_only(req: Request, handler: BaseHTTPRequestHandler) -> Response:
        if req.headers.get("authorization") != basic("ada", PASSWORD):
            return Response(401, b"who are you?", {"WWW-Authenticate": 'Basic realm="m"'})
        return Response(200, FEED, {"Content-Type": "application/rss+xml"})

    server.route("/members.xml", members_only)
    config = write_config(tmp_path, server.url("/members.xml"))
    out = run(config, "poll")
    assert "1 new" in out.stdout, out.stdout
    (hit,) = server.hits("/members.xml")
    assert hit.headers["x-api-key"] == API_KEY
    assert hit.headers["cookie"] == COOKIE
    assert hit.headers["user-agent"] == "MembersReader/2.1"
    # Nothing secret is stored, printed or logged.
    feeds = run(config, "feeds", "--json").stdout
    stored = (tmp_path / "agg.db").read_bytes()
    for secret in (PASSWORD, API_KEY, COOKIE, basic("ada", PASSWORD).split()[1]):
        assert secret not in out.stdout + out.stderr + feeds
        assert secret.encode() not in stored


def test_credentials_never_follow_a_redirect_to_another_host(
    tmp_path: Path, server: LoopbackServer
) -> None:
    with LoopbackServer(host="127.0.0.2") as elsewhere:
        elsewhere.serve("/moved.xml", FEED, **{"Content-Type": "application/rss+xml"})
        server.serve("/members.xml", b"", 302, Location=elsewhere.url("/moved.xml"))
        config = write_config(tmp_path, server.url("/members.xml"))
        out = run(config, "poll")
        assert "1 new" in out.stdout, out.stdout
        assert server.hits("/members.xml")[0].headers["authorization"] == basic("ada", PASSWORD)
        (followed,) = elsewhere.hits("/moved.xml")
    assert "authorization" not in followed.headers
    assert "x-api-key" not in followed.headers
    assert "cookie" not in followed.headers
    assert followed.headers["user-agent"] == "MembersReader/2.1"  # not a secret


def test_a_redirect_within_the_feeds_own_origin_keeps_its_credentials(
    tmp_path: Path, server: LoopbackServer
) -> None:
    server.serve("/members.xml", b"", 302, Location=server.url("/v2/members.xml"))
    server.serve("/v2/members.xml", FEED, **{"Content-Type": "application/rss+xml"})
    config = write_config(tmp_path, server.url("/members.xml"))
    run(config, "poll")
    (followed,) = server.hits("/v2/members.xml")
    assert followed.headers["authorization"] == basic("ada", PASSWORD)
    assert followed.headers["x-api-key"] == API_KEY


def test_a_password_in_the_config_itself_or_a_missing_secret_is_a_config_error(
    tmp_path: Path, server: LoopbackServer
) -> None:
    url = server.url("/members.xml")
    config = write_config(tmp_path, url).read_text(encoding="utf-8")
    path = tmp_path / "aggregator.toml"
    path.write_text(config.replace('password_file = "members.pass"', 'password = "plain"'))
    err = run(path, "poll", code=2).stderr
    assert "feeds[0].auth.password: is not read from the config" in err
    path.write_text(config)
    err = run(path, "poll", code=2, env_extra={"MEMBERS_API_KEY": ""}).stderr
    assert "feeds[0].headers.X-Api-Key: is empty" in err
    env = {k: v for k, v in os.environ.items() if k != "MEMBERS_API_KEY"}
    result = subprocess.run(
        [*CLI, "--config", str(path), "poll"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 2
    assert (
        "feeds[0].headers.X-Api-Key: environment variable MEMBERS_API_KEY is not set"
        in result.stderr
    )
    path.write_text(config.replace('Cookie = "', 'Host = "'))
    assert "feeds[0].headers.Host: is set by the fetcher itself" in run(path, "poll", code=2).stderr
    assert server.requests == []  # nothing was fetched with a config refused


def test_a_reload_says_a_secret_changed_without_showing_it(
    tmp_path: Path, server: LoopbackServer
) -> None:
    os.environ["MEMBERS_API_KEY"] = API_KEY
    try:
        path = write_config(tmp_path, server.url("/members.xml"))
        old = config_mod.load(path)
        (tmp_path / "members.pass").write_text("a-new-password\n", encoding="utf-8")
        new = config_mod.load(path)
    finally:
        del os.environ["MEMBERS_API_KEY"]
    assert new.feeds[0].fetch is not None and new.feeds[0].fetch.password == Secret(
        "a-new-password"
    )
    (line,) = config_changes(old, new)
    assert line.startswith("feed changed: ") and "<secret>" in line
    assert "a-new-password" not in line and PASSWORD not in line


def test_a_secret_path_that_is_not_a_regular_file_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "https://members.example/feed.xml")
    text = config.read_text(encoding="utf-8")
    for path, words in (("members.d", "not a regular file"), ("a\\u0000b", "not a usable path")):
        (tmp_path / "members.d").mkdir(exist_ok=True)
        config.write_text(text.replace('"members.pass"', f'"{path}"'), encoding="utf-8")
        err = run(config, "poll", code=2).stderr
        assert "feeds[0].auth.password_file: " in err and words in err, err


def test_credentials_reach_a_feed_whose_config_names_the_url_it_moved_to(
    tmp_path: Path, server: LoopbackServer
) -> None:
    # Polled at /old.xml, moved for good by a 301 to /members.xml; the config then names the
    # new URL (its database row keeps the old one as config_url): the options still apply.
    def members_only(req: Request, handler: BaseHTTPRequestHandler) -> Response:
        if req.headers.get("authorization") != basic("ada", PASSWORD):
            return Response(401, b"who are you?")
        return Response(200, FEED, {"Content-Type": "application/rss+xml"})

    server.route("/members.xml", members_only)
    server.serve("/old.xml", b"", 301, Location=server.url("/members.xml"))
    config = write_config(tmp_path, server.url("/old.xml"))
    run(config, "poll")
    config.write_text(config.read_text().replace("/old.xml", "/members.xml"))
    run(config, "poll", "--all")
    assert len(server.hits("/members.xml")) == 2
    assert all(
        h.headers.get("authorization") == basic("ada", PASSWORD)
        for h in server.hits("/members.xml")
    )
    (line,) = run(config, "feeds", "--json").stdout.splitlines()  # one JSON object a feed
    feed = json.loads(line)
    assert feed["error_kind"] is None and feed["error_count"] == 0, feed
