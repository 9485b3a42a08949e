"""The Ray auth token a driver's cluster uses (Ray >= 2.59 turns token authentication on for local clusters).

Left to itself, a private `ray.init()` writes a token to ~/.ray/auth_token with the umask's mode
(0644 in a 0755 folder with the usual one): any local user could read it and run code on the
cluster as its owner. A driver's private cluster gets a fresh token per driver, passed by
environment (readable only by this user's processes) and never written to a file. A driver that
joins a cluster reads the token Ray would read; a token file others can read is refused.
"""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Mapping

from trainables.errors import UserError

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


class RayAuthError(UserError):
    pass


def private_cluster_env() -> dict[str, str]:
    """The environment of a private cluster: a token made for this driver only.

    RAY_AUTH_MODE is left as it is: unset, ray.init turns token authentication on itself (and
    reloads its settings; set here, after Ray read them at import, the driver would send no token).
    """
    return {TOKEN_ENV: secrets.token_hex(32)}


def token_file(environ: Mapping[str, str]) -> Path | None:
    """The file Ray reads its token from, None when the environment holds the token itself."""
    if environ.get(TOKEN_ENV):
        return None
    return Path(environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token").expanduser()


def check_token_file(environ: Mapping[str, str]) -> None:
    """Refuse a token file that others can read or replace (its mode, or its folder's), found with lstat."""
    path = token_file(environ)
    if path is None:
        return
    try:
        info, folder = os.lstat(path), os.lstat(path.parent)
    except FileNotFoundError:
        return  # no token: Ray says so itself when the cluster needs one
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077 or folder.st_mode & 0o022:
        raise RayAuthError(f"Ray's auth token file {path} can be read or replaced by other users (mode "
                           f"{stat.S_IMODE(info.st_mode):04o}, folder {stat.S_IMODE(folder.st_mode):04o}, or a link or "
                           f"not yours); `chmod 600 {path}` and `chmod 700 {path.parent}`, or pass the token in "
                           f"{TOKEN_ENV}")
