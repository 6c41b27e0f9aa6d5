"""Identifier pseudonymisation: the one salt rule and the keyed hash of patient, study, image and file ids.

The DICOM reader, the dataset adapters and `predict` all resolve the salt here, so an index built today and a
prediction made tomorrow give the same patient the same hash.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os

__all__ = ["DEFAULT_ID_SALT", "ENV_SALT", "hash_id", "resolve_salt"]

log = logging.getLogger("mammokit.ids")

DEFAULT_ID_SALT = "mammokit-v1-public-salt"  # not secret: set MAMMOKIT_ID_SALT for real pseudonymisation
ENV_SALT = "MAMMOKIT_ID_SALT"


def resolve_salt(salt: str | None = None) -> str:
    """The identifier-hash key: `salt` when given, else env `MAMMOKIT_ID_SALT`, else the public default.

    The default is published, so anyone holding a patient id can recompute its hash: using it logs a warning, once
    per process.
    """
    if salt is not None:
        return salt
    env = os.environ.get(ENV_SALT)
    if env:
        return env
    _warn_default_salt()
    return DEFAULT_ID_SALT


@functools.cache
def _warn_default_salt() -> None:
    log.warning("identifiers are hashed with mammokit's public default salt, so anyone holding a patient id can "
                "match it: set %s to a secret of your own", ENV_SALT)


def hash_id(value: str | None, salt: str) -> str | None:
    """Keyed hash (HMAC-SHA256, first 20 hex digits) of an identifier; None for a missing one."""
    if not value:
        return None
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:20]
