"""Local paths handed to the embedded engine, in a form it reads and writes where they point.

Sail 0.7.2 percent-encodes a local path and then uses the encoded text as a file name: a Delta
table at `/data/wh space é/ods/t` is written to `/data/wh%20space%20%C3%A9/ods/t` (its log) and
`/data/wh%2520space%2520%25C3%25A9/ods/t` (its data files), and a table that is really there
reads as "no commit files found". A path made only of characters a URL keeps as they are goes
through unchanged, so the engine is handed one: a symbolic link, in a folder of this process's
own, to the deepest folder whose name needs encoding, followed by the rest of the path. Only the
engine sees the link; delta-rs, pyarrow, the logs and the user see the real path.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Optional

# Characters a URL path keeps as they are (RFC 3986 unreserved, plus the separators Delta's own
# partition folders use): a path of only these is read and written where it points.
_KEPT_AS_IS = re.compile(r"[A-Za-z0-9._~=+-]*\Z")


class EnginePaths:
    """Aliases for the local paths an engine would misplace; `close()` removes the links (only them)."""

    def __init__(self) -> None:
        self._folder: Optional[str] = None
        self._links: dict[str, str] = {}  # real folder -> its link

    def alias(self, path: str) -> str:
        if "://" in path:
            return path
        parts = os.path.abspath(path).split("/")
        encoded = [i for i, part in enumerate(parts) if not _KEPT_AS_IS.match(part)]
        if not encoded:
            return path
        last = encoded[-1] + 1
        return "/".join([self._link("/".join(parts[:last])), *parts[last:]])

    def _link(self, folder: str) -> str:
        if folder not in self._links:
            if self._folder is None:
                self._folder = tempfile.mkdtemp(prefix="laion-etl-engine-paths-")
            if not os.path.lexists(folder):
                # Writing through a link that points nowhere fails: the folder a write would create, made now.
                os.makedirs(folder)
            link = os.path.join(self._folder, str(len(self._links)))
            os.symlink(folder, link)
            self._links[folder] = link
        return self._links[folder]

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder)  # the links themselves: rmtree does not follow them


# The engine of this process (one per process), when it needs aliases.
_active: Optional[EnginePaths] = None


def use_aliases(paths: Optional[EnginePaths]) -> None:
    """Make `paths` the aliases of this process's engine (None: hand paths over as they are)."""
    global _active
    _active = paths


def engine_path(path: str) -> str:
    """`path` as this process's engine must be handed it to reach what `path` names."""
    return _active.alias(path) if _active is not None else path
