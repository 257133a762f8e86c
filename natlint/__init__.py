"""natlint: a static analyzer and linter for iptables-save dumps.

    >>> import natlint
    >>> rs = natlint.load("*filter\\n:INPUT DROP [0:0]\\n-A INPUT -p tcp --dport 22 -j ACCEPT\\nCOMMIT\\n")
    >>> rs.family, rs.rule_count
    (4, 1)
    >>> rs.check()
    []

The API: :func:`load` gives a :class:`Ruleset`; ``ruleset.check(config=None, host=None)`` the
findings (as ``natlint check``), ``ruleset.trace(in_interface="eth0", dst=..., proto="tcp",
dport=22)`` what happens to a packet class (as ``natlint trace``), ``ruleset.ports()`` the ports
it opens and forwards; :func:`diff` what changes between two dumps. See ``docs/library.md`` and
:mod:`natlint.api`. Importing natlint loads neither the parser nor the engine: they are
imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from natlint.model import Ruleset

if TYPE_CHECKING:
    import os

    from natlint.api import HostLike
    from natlint.semdiff import DiffReport

__all__ = ["__version__", "diff", "load", "Ruleset"]
__version__ = "0.1.0"


def load(source: str | bytes | Path, *, path: str | None = None, family: Literal[4, 6] | None = None) -> Ruleset:
    """Read a dump: a file path (``Path`` or an existing file name), the text, or raw bytes.

    Never raises on bad content: problems are in ``ruleset.diagnostics`` (findings with
    ``path:line:col``). Raises ``OSError`` only when a named file cannot be read.
    """
    from natlint.syntax.reader import read

    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and _is_file(source)):
        file_path = Path(source)
        return read(file_path.read_bytes(), path or str(source), family)
    return read(source, path or "<text>", family)


def diff(a: Ruleset | str | bytes | os.PathLike[str], b: Ruleset | str | bytes | os.PathLike[str],
         host: HostLike = None) -> DiffReport:
    """What changes for traffic between two dumps ``a`` (before) and ``b`` (after): rulesets, or
    anything :func:`load` reads. ``host``: a ``HostModel``, a host TOML file, ``"live"`` or None
    (inferred). The result is ``natlint.semdiff.diff(a, b, host)``'s (see ``natlint diff``)."""
    from natlint.api import diff as semantic_diff

    return semantic_diff(a, b, host)


def _is_file(candidate: str) -> bool:
    try:
        return len(candidate) < 4096 and Path(candidate).is_file()
    except (OSError, ValueError):
        return False
