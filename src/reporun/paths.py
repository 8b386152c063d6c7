"""Where reporun keeps its files on this machine, per user, whatever the working directory.

The data dir of `reporun serve` is `$XDG_DATA_HOME/reporun` (else `~/.local/share/reporun`)
unless `--data-dir` names another. A running `serve` records its data dir, for its port, in
`$XDG_STATE_HOME/reporun/servers/PORT.json` (else `~/.local/state/reporun/...`), so client
commands find its admin token, and `token` commands its signing key, from any directory.
Only the standard library here: client commands import this and little else.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

ADMIN_TOKEN_FILE = "admin.token"
SECRET_KEY_FILE = "secret.key"
DATABASE_FILE = "reporun.db"
DEFAULT_URL = "http://127.0.0.1:8000"


def _xdg(variable: str, fallback: str, env: Mapping[str, str] | None) -> Path:
    value = (os.environ if env is None else env).get(variable, "")
    # The XDG spec: a relative path is invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/reporun`, else `~/.local/share/reporun`."""
    return _xdg("XDG_DATA_HOME", ".local/share", env) / "reporun"


def servers_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where running `serve` processes record their data dirs, one file per port."""
    return _xdg("XDG_STATE_HOME", ".local/state", env) / "reporun" / "servers"


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_of(url: str) -> tuple[str, int] | None:
    """The host and port of a loopback URL; None for any other host (or no URL at all)."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if not parts.hostname or not is_loopback_host(parts.hostname):
        return None
    return parts.hostname, port


def record_server(host: str, port: int, data_dir: Path) -> Path:
    """Say that this process serves `host:port` from `data_dir` (replacing any older record)."""
    directory = servers_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{port}.json"
    entry = {"host": host, "port": port, "data_dir": str(data_dir.resolve()), "pid": os.getpid()}
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{port}.")
    with os.fdopen(fd, "w") as handle:  # mkstemp makes it 0600
        json.dump(entry, handle)
    os.replace(temporary, path)
    return path


def forget_server(path: Path) -> None:
    """Remove this process's record, unless another `serve` has replaced it since."""
    entry = _read_entry(path)
    if entry is not None and entry.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _read_entry(path: Path) -> dict[str, object] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False  # gone, or now another user's process: not this user's serve
    return True


def served_data_dir(url: str) -> Path | None:
    """The data dir of the `reporun serve` of this user that is running on `url`'s port, when
    `url` is a loopback URL and such a server is recorded and alive."""
    target = _port_of(url)
    if target is None:
        return None
    host, port = target
    entry = _read_entry(servers_dir() / f"{port}.json")
    if entry is None or not _alive(entry.get("pid")):
        return None
    served_host = str(entry.get("host", ""))
    if served_host != host and "localhost" not in (host, served_host):
        return None
    data_dir = entry.get("data_dir")
    return Path(data_dir) if isinstance(data_dir, str) and data_dir else None


def local_data_dir(url: str, configured: Path | None) -> Path:
    """The data dir of this machine's server at `url`: the configured one (REPORUN_DATA_DIR),
    else the one a running `serve` on that port recorded, else the default."""
    if configured is not None:
        return configured
    return served_data_dir(url) or default_data_dir()


def find_admin_token(url: str, configured: Path | None) -> str | None:
    """The admin token `reporun serve` stored for the server at `url`. Only for a loopback
    URL, and (unless REPORUN_DATA_DIR names the data dir) only while this user's `serve` is
    recorded as running on that port: the local admin token is never sent to another host, nor
    to whatever else listens on a loopback port of a shared machine."""
    if _port_of(url) is None:
        return None
    data_dir = configured or served_data_dir(url)
    if data_dir is None:
        return None
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
