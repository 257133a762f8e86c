"""natlint: a static analyzer and linter for iptables-save dumps.

    >>> import natlint
    >>> rs = natlint.load("*filter\\n:INPUT DROP [0:0]\\n-A INPUT -p tcp --dport 22 -j ACCEPT\\nCOMMIT\\n")
    >>> rs.family, rs.rule_count
    (4, 1)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from natlint.model import Ruleset

__all__ = ["__version__", "load", "Ruleset"]
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


def _is_file(candidate: str) -> bool:
    try:
        return len(candidate) < 4096 and Path(candidate).is_file()
    except (OSError, ValueError):
        return False
