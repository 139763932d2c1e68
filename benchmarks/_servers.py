# The loopback file server of a benchmark run: a real nginx when installed, else the aiohttp
# fallback in _static_server.py. Two profiles:
#   unthrottled  plain static files (sendfile);
#   wan          each response capped at 25 MiB/s (nginx limit_rate, per request) and delayed by
#                20 ms before it starts (nginx Lua ngx.sleep in access_by_lua_block), a stand-in
#                for a long round trip: this kernel has no netem. Without the Lua module the
#                delay is missing and the report says so.
# The config lives in a temp folder; the server is always stopped (context manager). Both servers
# write the same access-log line per request ("METHOD URI STATUS BODY_BYTES END_TIME DURATION
# CONNECTION_ID "RANGE""), which is how bytes served, requests in flight and connections opened
# per run are counted, and answer /__status with "Active connections: N".

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["PROFILES", "LogEntry", "Served", "Server", "find_lua_modules"]

WAN_RATE = "25m"  # nginx syntax: 25 MiB/s
WAN_RATE_BPS = 25 * 1024 * 1024
WAN_DELAY = 0.02
PROFILES = ("unthrottled", "wan")

_MODULE_DIRS = ("/usr/lib/nginx/modules", "/usr/share/nginx/modules", "/usr/lib64/nginx/modules")


def find_lua_modules() -> list[Path] | None:
    """The ndk + lua dynamic modules to load, or None when the Lua module is not installed."""
    for d in _MODULE_DIRS:
        ndk, lua = Path(d) / "ndk_http_module.so", Path(d) / "ngx_http_lua_module.so"
        if lua.is_file():
            return [ndk, lua] if ndk.is_file() else [lua]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Served:
    requests: int
    data_requests: int  # GET answered 200/206 outside folder listings
    body_bytes: int
    peak_in_flight: int = 0  # most data requests being answered at the same moment (1 ms clock)
    connections: int = 0  # distinct TCP connections the requests came on


@dataclass
class LogEntry:
    method: str
    uri: str
    status: str
    body_bytes: int
    range: str  # the request's Range header, "-" when none
    start: float = 0.0  # Unix time the request was read (ms resolution)
    end: float = 0.0  # Unix time the response was done (or aborted)
    connection: str = ""  # server-side serial number of the connection

    @property
    def is_data(self) -> bool:
        """A GET of file bytes (not a folder listing, not an error)."""
        return self.method == "GET" and self.status in ("200", "206") and not self.uri.endswith("/")

    def expected_bytes(self, size: int) -> int:
        """Body length this request asked for, for a file of ``size`` bytes."""
        if self.status != "206" or not self.range.startswith("bytes="):
            return size
        first, _, last = self.range[6:].partition("-")
        if not first:
            return min(size, int(last or 0))
        end = min(int(last), size - 1) if last else size - 1
        return max(0, end - int(first) + 1)


_NGINX_CONF = """\
{modules}
{user}
worker_processes 2;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$request_method $request_uri $status $body_bytes_sent $msec $request_time '
                     '$connection "$http_range"';
    access_log {tmp}/access.log bench;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/octet-stream bin; application/json json; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        autoindex on;
        location = /__status {{ stub_status; access_log off; }}
        location / {{
{location}
        }}
    }}
}}
"""


class Server:
    """A started file server for one profile; use as a context manager."""

    def __init__(self, root: Path, profile: str, *, prefer_nginx: bool = True) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}")
        self.root = root
        self.profile = profile
        self.prefer_nginx = prefer_nginx
        self.notes: list[str] = []
        self.kind = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="bulkflex-bench-server-"))
        self.access_log = self._tmp / "access.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- start / stop -----------------------------------------------------------------------

    def __enter__(self) -> Server:
        try:
            if self.prefer_nginx and shutil.which("nginx"):
                self._start_nginx()
            else:
                if self.prefer_nginx:
                    self.notes.append("nginx not installed: using the aiohttp fallback server")
                self._start_fallback()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _start_nginx(self) -> None:
        nginx = shutil.which("nginx")
        assert nginx is not None
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        self.kind = version.replace("nginx version: ", "") or "nginx"
        lines: list[str] = []
        modules = ""
        if self.profile == "wan":
            lines.append(f"            limit_rate {WAN_RATE};")
            lua = find_lua_modules()
            if lua:
                modules = "\n".join(f"load_module {m};" for m in lua)
                lines.append(f"            access_by_lua_block {{ ngx.sleep({WAN_DELAY}) }}")
            else:
                self.notes.append(
                    "nginx Lua module missing: the WAN-like profile has the rate cap but NO "
                    "added 20 ms round trip"
                )
        user = "user root;" if os.geteuid() == 0 else ""
        last_error = ""
        for _attempt in range(5):
            self.port = _free_port()
            conf = self._tmp / "nginx.conf"
            conf.write_text(
                _NGINX_CONF.format(
                    modules=modules,
                    user=user,
                    tmp=self._tmp,
                    port=self.port,
                    root=self.root.resolve(),
                    location="\n".join(lines) or "            # no limits",
                )
            )
            self._proc = subprocess.Popen(
                [nginx, "-c", str(conf), "-p", str(self._tmp)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self._tmp / "stderr.log", "wb"),  # noqa: SIM115
                start_new_session=True,
            )
            if self._wait_ready():
                return
            self._stop_proc()
            last_error = (self._tmp / "stderr.log").read_text(errors="replace")
            err = self._tmp / "error.log"
            if err.exists():
                last_error += err.read_text(errors="replace")
        raise RuntimeError(f"nginx did not start: {last_error.strip()[-2000:]}")

    def _start_fallback(self) -> None:
        self.kind = "aiohttp fallback server (benchmarks/_static_server.py)"
        port_file = self._tmp / "port"
        cmd = [
            sys.executable,
            str(Path(__file__).with_name("_static_server.py")),
            "--root",
            str(self.root),
            "--port-file",
            str(port_file),
            "--log",
            str(self.access_log),
        ]
        if self.profile == "wan":
            cmd += ["--rate", str(WAN_RATE_BPS), "--delay", str(WAN_DELAY)]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self._tmp / "stderr.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not port_file.exists():
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        if not port_file.exists():
            raise RuntimeError(
                "fallback server did not start: "
                + (self._tmp / "stderr.log").read_text(errors="replace")[-2000:]
            )
        self.port = int(port_file.read_text())
        if not self._wait_ready():
            raise RuntimeError("fallback server does not answer")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                return False
            if self.active_connections() is not None:
                return True
            time.sleep(0.05)
        return False

    def _stop_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()

    def stop(self) -> None:
        self._stop_proc()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- accounting -------------------------------------------------------------------------

    def active_connections(self) -> int | None:
        """Open client connections (including this probe), or None if the server is not up."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/__status", timeout=2) as r:
                first = r.read().decode().splitlines()[0]
        except OSError:
            return None
        return int(first.split(":")[1])

    def wait_idle(self, timeout: float = 20.0) -> bool:
        """Wait until no client connection but the probe is open (a killed client's aborted
        requests are then logged)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.active_connections() == 1:
                return True
            time.sleep(0.1)
        return False

    def log_offset(self) -> int:
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def entries_since(self, offset: int) -> list[LogEntry]:
        """Access-log lines written after ``offset`` (from :meth:`log_offset`)."""
        try:
            with open(self.access_log, "rb") as f:
                f.seek(offset)
                lines = f.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        entries: list[LogEntry] = []
        for line in lines:
            parts = line.split(" ", 7)
            if len(parts) < 8 or not parts[3].isdigit():
                continue
            end, took = float(parts[4]), float(parts[5])
            entries.append(
                LogEntry(
                    parts[0],
                    parts[1],
                    parts[2],
                    int(parts[3]),
                    parts[7].strip('"'),
                    start=end - took,
                    end=end,
                    connection=parts[6],
                )
            )
        return entries

    def served_since(self, offset: int) -> Served:
        """Requests and body bytes logged after ``offset``."""
        entries = self.entries_since(offset)
        data = [e for e in entries if e.is_data]
        # Peak of data requests in flight. The log has 1 ms resolution, so each request is taken
        # to last until 1 ms after its logged end (an upper bound for sub-millisecond requests).
        events = sorted([(e.start, 1) for e in data] + [(e.end + 0.001, -1) for e in data])
        peak = level = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        return Served(
            len(entries),
            len(data),
            sum(e.body_bytes for e in entries),
            peak_in_flight=peak,
            connections=len({e.connection for e in entries}),
        )
