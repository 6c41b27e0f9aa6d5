"""Archive access: who mammokit is to the archive (credentials), whom it trusts (TLS), and the HTTP session.

Credentials come from env `MAMMOKIT_PACS_USER` / `MAMMOKIT_PACS_PASSWORD` (and `MAMMOKIT_PACS_CA_BUNDLE`), else from
a YAML file readable by its owner only (default `config_dir() / "pacs.yaml"`):

    archives:
      - url: https://pacs.example.org/dicom-web   # the longest url that prefixes the archive's URL wins
        username: mammokit
        password: secret
        ca_bundle: /etc/ssl/hospital-ca.pem         # optional; https is verified against it
        timeout_s: 30                               # optional

Never from the command line (a URL with `user:password@` is refused) and never logged: the password is kept out of
`repr`, and an archive that refuses the credentials is one line naming where they came from.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import config_dir

__all__ = ["ENV_CA_BUNDLE", "ENV_PASSWORD", "ENV_USER", "ArchiveAccess", "ArchiveUnreachableError",
           "CredentialsRefusedError", "access_error", "check_response", "default_config_file", "http_session",
           "load_access"]

ENV_USER = "MAMMOKIT_PACS_USER"
ENV_PASSWORD = "MAMMOKIT_PACS_PASSWORD"
ENV_CA_BUNDLE = "MAMMOKIT_PACS_CA_BUNDLE"
CONFIG_NAME = "pacs.yaml"
DEFAULT_TIMEOUT_S = 30.0
# GETs survive a short archive outage on their own: connection refused / reset and 502-504 are retried with backoff
# 0.5, 1, 2, 4, 8 s (about 15 s in all); POSTs are retried by the caller, who knows what was acknowledged
GET_RETRIES = 5
GET_BACKOFF_S = 0.5
RETRY_STATUS = (429, 502, 503, 504)
ENTRY_KEYS = {"url", "username", "password", "ca_bundle", "timeout_s"}


class CredentialsRefusedError(InvalidInputError):
    """The archive answered 401/403: nothing works until the user fixes the credentials."""


class ArchiveUnreachableError(InvalidInputError):
    """The archive did not answer (connection refused, timeout, TLS not trusted): perhaps only for a while."""


@dataclass(frozen=True)
class ArchiveAccess:
    """How to reach one archive: its URL (e.g. a DICOMweb root), credentials, CA bundle and request timeout."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    source: str = "none"  # where the credentials came from: "environment", a config file, or "none"

    @property
    def is_https(self) -> bool:
        return urlsplit(self.url).scheme.lower() == "https"

    @property
    def verify(self) -> bool | str:
        """requests' `verify`: the CA bundle for https when one is given, else the system's trust store."""
        return str(self.ca_bundle) if self.is_https and self.ca_bundle is not None else True

    @property
    def where_to_fix(self) -> str:
        """Where a user changes the credentials, for error messages."""
        return f"{ENV_USER}/{ENV_PASSWORD} or {self.config_file_hint}"

    @property
    def config_file_hint(self) -> str:
        return self.source if self.source not in ("environment", "none") else str(default_config_file())


def default_config_file() -> Path:
    """`config_dir() / "pacs.yaml"`."""
    return config_dir() / CONFIG_NAME


def load_access(url: str, *, config_file: str | Path | None = None) -> ArchiveAccess:
    """The access for `url`: credentials from the environment, else from the owner-only config file (if any).

    Raises:
        InvalidInputError: a URL with credentials in it, only one of user/password in the environment, a config
            file others may read (chmod 600 FILE), or one that is not the documented YAML.
        MissingInputError: a `config_file` or CA bundle that does not exist.
    """
    url = _check_url(url)
    entry, source = _file_entry(url, config_file)
    username, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if bool(username) != bool(password):
        raise InvalidInputError(f"set both {ENV_USER} and {ENV_PASSWORD}, or neither")
    if username:
        source = "environment"
    else:
        username, password = entry.get("username"), entry.get("password")
        if not entry:
            source = "none"
    ca = os.environ.get(ENV_CA_BUNDLE) or entry.get("ca_bundle")
    return ArchiveAccess(url=url, username=_text(username), password=_text(password), ca_bundle=_ca_bundle(ca),
                         timeout_s=_timeout(entry.get("timeout_s", DEFAULT_TIMEOUT_S), source), source=source)


def _check_url(url: str) -> str:
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"{url!r}: not an http:// or https:// archive URL")
    if parts.username or parts.password:
        raise InvalidInputError(f"{parts.scheme}://{parts.hostname}: credentials do not belong in the URL (it shows in "
                                f"process lists and logs); set {ENV_USER}/{ENV_PASSWORD} or {default_config_file()}")
    return str(url).strip().rstrip("/")


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _ca_bundle(value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise MissingInputError(f"{path}: CA bundle not found")
    return path


def _timeout(value: Any, source: str) -> float:
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = 0.0
    if timeout <= 0:
        raise InvalidInputError(f"{source}: timeout_s must be a positive number of seconds, not {value!r}")
    return timeout


def _file_entry(url: str, config_file: str | Path | None) -> tuple[dict[str, Any], str]:
    """The config file's entry for `url` ({} when there is no file or no entry) and the file's path."""
    path = Path(config_file).expanduser() if config_file is not None else default_config_file()
    if not path.exists():
        if config_file is not None:
            raise MissingInputError(f"{path}: archive config file not found")
        return {}, str(path)
    _check_private(path)
    return _match(url, _archives(path), path), str(path)


def _check_private(path: Path) -> None:
    """Refuse a credentials file whose mode grants anything to group or others."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(f"{path}: holds passwords but others may read it (mode {stat.S_IMODE(mode):04o}): "
                                f"chmod 600 {path}")


def _archives(path: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InvalidInputError(f"{path}: cannot read the archive config ({type(err).__name__})") from err
    archives = data.get("archives", []) if isinstance(data, dict) else None
    if not isinstance(archives, list) or not all(isinstance(a, dict) and a.get("url") for a in archives):
        raise InvalidInputError(f"{path}: expected 'archives:' with a list of entries that each have a url")
    for entry in archives:
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise InvalidInputError(f"{path}: unknown key(s) {', '.join(unknown)} in an archive entry "
                                    f"(known: {', '.join(sorted(ENTRY_KEYS))})")
    return archives


def _match(url: str, archives: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """The entry with the longest url that is `url` or a path prefix of it."""
    best: dict[str, Any] = {}
    for entry in archives:
        prefix = str(entry["url"]).strip().rstrip("/")
        if (url == prefix or url.startswith(prefix + "/")) and len(prefix) > len(str(best.get("url", ""))):
            best = {**entry, "url": prefix}
    return best


class _Session(requests.Session):
    """A session whose requests time out after `timeout_s` unless the caller says otherwise, and verify TLS with
    the session's own `verify` (plain requests lets env REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE replace it)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        return super().request(method, url, *args, **kwargs)


def http_session(access: ArchiveAccess, *, retry: bool = True) -> requests.Session:
    """A session with the archive's basic auth, TLS verification and a default timeout.

    With `retry`, a refused or reset connection and 429/502/503/504 to a GET are retried with backoff (about 15 s in
    all); `retry=False` leaves every retry to the caller (`push` does its own, knowing what was acknowledged).
    """
    session = _Session(access.timeout_s)
    if access.username is not None:
        session.auth = (access.username, access.password or "")
    session.verify = access.verify
    retries = Retry(total=GET_RETRIES, connect=GET_RETRIES, read=2, status=GET_RETRIES, other=0,
                    backoff_factor=GET_BACKOFF_S, status_forcelist=RETRY_STATUS,
                    allowed_methods=frozenset({"GET", "HEAD"}), raise_on_status=False,
                    respect_retry_after_header=True) if retry else Retry(total=0, raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def check_response(response: requests.Response, access: ArchiveAccess) -> requests.Response:
    """`response`, unless the archive refused the credentials (401/403): then one `CredentialsRefusedError` line."""
    if response.status_code in (401, 403):
        raise CredentialsRefusedError(f"{access.url}: the archive refused the credentials (HTTP "
                                      f"{response.status_code}): check {access.where_to_fix}")
    return response


def access_error(err: Exception, access: ArchiveAccess, doing: str) -> InvalidInputError:
    """A one-line error for a request that failed while `doing` something (refused credentials raise at once)."""
    response = getattr(err, "response", None)
    if response is not None:
        check_response(response, access)
        return InvalidInputError(f"{access.url}: {doing} failed (HTTP {response.status_code} {response.reason})")
    if isinstance(err, requests.exceptions.SSLError):
        return ArchiveUnreachableError(f"{access.url}: the archive's TLS certificate is not trusted: give its CA "
                                       f"bundle in {ENV_CA_BUNDLE} or as ca_bundle in {access.config_file_hint}")
    if isinstance(err, requests.exceptions.Timeout):
        return ArchiveUnreachableError(f"{access.url}: the archive did not answer within {access.timeout_s:g} s "
                                       f"({doing})")
    if isinstance(err, requests.exceptions.ConnectionError):
        return ArchiveUnreachableError(f"{access.url}: cannot reach the archive ({doing})")
    return InvalidInputError(f"{access.url}: {doing} failed ({type(err).__name__})")
