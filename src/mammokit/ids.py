"""Identifier pseudonymisation: the one salt rule, the keyed hash of patient, study, image and file ids, and paths
with the patient's folders replaced by that hash.

The DICOM reader, the dataset adapters and `predict` all resolve the salt here, so an index built today and a
prediction made tomorrow give the same patient the same hash. The salt is env `MAMMOKIT_ID_SALT` when set, else a
random salt made once per installation and kept in the user's config folder (`installation_salt`): no salt is
public, so nobody can recompute a hash by trying every patient id.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePath

from mammokit.errors import InvalidInputError

__all__ = ["ENV_CONFIG_DIR", "ENV_SALT", "config_dir", "default_salt", "hash_id", "installation_salt", "resolve_salt",
           "safe_relpath"]

log = logging.getLogger("mammokit.ids")

ENV_SALT = "MAMMOKIT_ID_SALT"
ENV_CONFIG_DIR = "MAMMOKIT_CONFIG_DIR"  # where mammokit keeps its per-installation files (default: the XDG folder)
SALT_FILE = "id_salt"
MIN_CONTAINED_ID = 4  # an id this long or longer is replaced wherever it occurs in a folder or file name


def resolve_salt(salt: str | None = None) -> str:
    """The identifier-hash key: `salt` when given, else env `MAMMOKIT_ID_SALT`, else this installation's salt."""
    if salt is not None:
        return salt
    env = os.environ.get(ENV_SALT)
    if env:
        return env
    return installation_salt()


def config_dir() -> Path:
    """mammokit's config folder: env `MAMMOKIT_CONFIG_DIR`, else `$XDG_CONFIG_HOME/mammokit`, else
    `~/.config/mammokit`."""
    if os.environ.get(ENV_CONFIG_DIR):
        return Path(os.environ[ENV_CONFIG_DIR]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base).expanduser() / "mammokit"


def installation_salt() -> str:
    """The random salt of this installation (`config_dir() / "id_salt"`), made on first use and reused after.

    It is created atomically, readable by its owner only (0600), and its location (never its value) is logged once
    per process. Losing it changes every hash this installation makes from then on; copy it, or set
    `MAMMOKIT_ID_SALT`, to hash alike on several machines.
    """
    path = config_dir() / SALT_FILE
    if not path.exists():
        _create_salt(path)
    salt = _read_salt(path)
    _announce(str(path))
    return salt


def _create_salt(path: Path) -> None:
    """Write a new random salt to `path` unless another process wrote one first (theirs is then kept)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{SALT_FILE}.")  # mkstemp makes the file 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces a salt that exists
        except FileExistsError:
            return
    finally:
        os.unlink(tmp)
    log.warning("created this installation's random identifier salt in %s: keep it (hashes depend on it), or set "
                "%s to a key of your own", path, ENV_SALT)


def _read_salt(path: Path) -> str:
    """The salt kept in `path`; raises when the file is empty or unreadable rather than hashing with another key."""
    try:
        salt = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path}: cannot read mammokit's identifier salt ({err})") from err
    if len(salt) < 32:
        raise InvalidInputError(f"{path}: mammokit's identifier salt is empty or too short; restore it, or delete "
                                "it to start a new one (patients then hash differently than in earlier outputs)")
    return salt


@functools.cache
def _announce(path: str) -> None:
    log.info("identifiers are hashed with this installation's salt in %s (set %s to use your own)", path, ENV_SALT)


def hash_id(value: str | None, salt: str) -> str | None:
    """Keyed hash (HMAC-SHA256, first 20 hex digits) of an identifier; None for a missing one."""
    if not value:
        return None
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:20]


def safe_relpath(relpath: str, patient_id: str | None, salt: str, *others: str | None) -> str:
    """`relpath` with the patient's folders replaced by the patient's hash, so it can leave the local index.

    A folder naming `patient_id` (or one of `others`, e.g. the AccessionNumber or the UIDs) becomes that id's
    hash; in the file name only the id itself is replaced, so the files of one folder keep distinct names. An id of
    `MIN_CONTAINED_ID` characters or more counts wherever it occurs (case-insensitively); a shorter one only as a
    whole name.
    """
    # longest first: a Study UID is often the prefix of the SOP UIDs in the file names
    ids = {v: hash_id(v, salt) for v in sorted({v for v in (patient_id, *others) if v and v.strip()}, key=len,
                                                reverse=True)}
    if not ids:
        return relpath
    parts = PurePath(relpath).parts
    folders = [_folder(p, ids) for p in parts[:-1]]
    return str(PurePath(*folders, _file_name(parts[-1], ids))) if parts else relpath


def _pattern(value: str, file: bool) -> str:
    """Where `value` names the patient: anywhere when long enough, else the whole folder name or file stem."""
    if len(value) >= MIN_CONTAINED_ID:
        return re.escape(value)
    return rf"^{re.escape(value)}(?=\.[^.]*$|$)" if file else rf"^{re.escape(value)}$"


def _names(name: str, value: str, file: bool) -> bool:
    """Whether `name` holds `value` where `_pattern` looks (case-insensitive). ASCII is compared as strings: the
    index calls this for every file with ids of its own, which would compile fresh regexes each time."""
    if not (name.isascii() and value.isascii()):
        return re.search(_pattern(value, file), name, re.IGNORECASE) is not None
    low, v = name.lower(), value.lower()
    if len(value) >= MIN_CONTAINED_ID:
        return v in low
    return low == v or (file and low.startswith(v + ".") and "." not in low[len(v) + 1:])


def _replace(name: str, value: str, digest: str) -> str:
    """`name` with `value` replaced by `digest` where `_pattern(value, file=True)` finds it (case-insensitive)."""
    if not (name.isascii() and value.isascii()):
        return re.sub(_pattern(value, True), digest, name, flags=re.IGNORECASE)
    if len(value) < MIN_CONTAINED_ID:
        return digest + name[len(value):] if _names(name, value, True) else name
    low, v, out, start = name.lower(), value.lower(), [], 0
    while (hit := low.find(v, start)) >= 0:
        out += [name[start:hit], digest]
        start = hit + len(v)
    return "".join(out) + name[start:]


def _folder(name: str, ids: dict[str, str | None]) -> str:
    hit = next((h for v, h in ids.items() if _names(name, v, False)), None)
    return hit or name


def _file_name(name: str, ids: dict[str, str | None]) -> str:
    for value, digest in ids.items():
        name = _replace(name, value, digest or "")
    return name


@contextlib.contextmanager
def default_salt(salt: str) -> Iterator[None]:
    """Hash with `salt` in this process and the workers it starts while the block runs, unless `MAMMOKIT_ID_SALT`
    is set (then that wins). For synthetic data whose split must not depend on the installation (the demo)."""
    if os.environ.get(ENV_SALT):
        yield
        return
    os.environ[ENV_SALT] = salt
    try:
        yield
    finally:
        os.environ.pop(ENV_SALT, None)
