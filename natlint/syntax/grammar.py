"""The lark grammar of one command line, and a cache that parses each line *shape* once.

A kube-proxy dump has 100k lines but only a few dozen distinct shapes: ``-A @ -d @ -p tcp
-m comment --comment @ -m tcp --dport 0 -j @``. Option words are kept, argument words are
replaced by a placeholder (``0`` for digits, ``@`` for anything else, so optional numeric
arguments still parse the same way). lark parses each new shape once; every later line of
that shape only binds its words to the cached :class:`Item` list. The grammar stays the single
definition of the language: a shape is itself a valid line, parsed by the same grammar.
"""

from __future__ import annotations

import atexit
import os
import re
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # lark is imported lazily: most runs of a small file never need it twice
    from lark import Lark

__all__ = [
    "Item", "LineSyntaxError", "grammar_path", "grammar_text", "parse_words", "parse_shape", "shape_of", "SPELLINGS",
    "COMMANDS", "clear_caches", "remember_shape",
]

_OPTION_WORD = re.compile(r"--?[A-Za-z0-9][A-Za-z0-9_.+-]*")

COMMANDS = frozenset({
    "append", "insert", "delete", "replace", "new_chain", "delete_chain", "flush", "zero",
    "policy", "rename_chain", "list", "list_rules", "check",
})


@dataclass(frozen=True, slots=True)
class Item:
    """One option of a line: its canonical name, the index of its word, of its ``!`` and of
    its argument words (indices into the line's word list)."""

    name: str
    at: int
    args: tuple[int, ...]
    negated: bool
    neg_at: int = -1


class LineSyntaxError(Exception):
    """The line does not parse; ``word`` is the index of the offending word (None: the end)."""

    def __init__(self, message: str, word: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.word = word


def grammar_path() -> Path:
    """The grammar shipped in the wheel, or the source tree's ``grammar/`` in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_grammar" / "iptables_save.lark"
    if packaged.is_file():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "grammar" / "iptables_save.lark"


@cache
def grammar_text() -> str:
    return grammar_path().read_text(encoding="utf-8")


def _spellings(text: str) -> dict[str, str]:
    """Read, from the grammar itself, every option spelling and the canonical name it has."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        code = line.split("//", 1)[0]
        alias = re.search(r"->\s*(\w+)\s*$", code)
        if not alias:
            continue
        for spelling in re.findall(r'"(-[^"]*)"', code):
            result[spelling] = alias.group(1)
    return result


SPELLINGS: dict[str, str] = _spellings(grammar_text())


def _private_cache_dir() -> str | None:
    """~/.cache/natlint when only this user can write it, else None (no cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "natlint")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
    except OSError:
        return None
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        return None
    return directory


def _private_cache_file() -> str | bool:
    """A lark cache file in a directory only this user can write, or False (no cache).

    lark's ``cache=True`` unpickles a predictable file in /tmp: a local user could plant a
    pickle that runs when root runs natlint. A 0700 directory we own is safe.
    """
    directory = _private_cache_dir()
    if directory is None:
        return False
    try:
        import hashlib

        import lark

        digest = hashlib.sha256((grammar_text() + lark.__version__).encode()).hexdigest()[:16]
        return os.path.join(directory, f"grammar-{digest}.lark-cache")
    except OSError:
        return False


@cache
def _parser() -> Lark:
    from lark import Lark

    cache_file = _private_cache_file()
    try:
        return Lark(grammar_text(), parser="lalr", keep_all_tokens=True, cache=cache_file)
    except OSError:
        return Lark(grammar_text(), parser="lalr", keep_all_tokens=True)


def _shape_word(word: str) -> str:
    if word == "!" or word in SPELLINGS:
        return word
    if word[:1] == "-" and _OPTION_WORD.fullmatch(word):
        return word
    if word.isascii() and word.isdigit():
        return "0"
    return "@"


_SHAPES: dict[tuple[str, ...], tuple[Item, ...] | LineSyntaxError] = {}
_KEPT = frozenset(SPELLINGS) | {"!"}


def shape_of(words: list[str]) -> tuple[str, ...]:
    """The line's shape: option words as written, ``0`` for a number, ``@`` for any other word."""
    # _shape_word() inlined for the common words: this runs once per line of a dump.
    return tuple([
        w if w in _KEPT else _shape_word(w) if w[:1] == "-" else "0" if w.isdigit() and w.isascii() else "@"
        for w in words
    ])


def clear_caches() -> None:
    """Forget the shapes parsed so far (the lark parser itself is kept); the next one is looked
    up in the shapes file again, as in a new process."""
    _SHAPES.clear()
    _disk["loaded"] = False


def parse_words(words: list[str]) -> tuple[Item, ...]:
    """Parse a line's words (already split by the tokenizer) into its items."""
    return parse_shape(shape_of(words))


def parse_shape(shape: tuple[str, ...]) -> tuple[Item, ...]:
    """Parse a line's shape (see :func:`shape_of`) into its items, once per distinct shape."""
    found = _SHAPES.get(shape)
    if found is None and not _disk["loaded"]:
        _load_shapes_file()
        found = _SHAPES.get(shape)
    if found is None:
        found = _parse_shape(shape)
        if len(_SHAPES) < 100_000:
            _SHAPES[shape] = found
    if isinstance(found, LineSyntaxError):
        raise found
    return found


# ---- the shapes file -------------------------------------------------------------------------
# Loading the lark parser costs more than reading a small dump (0.1-0.2 s). The shapes of
# lines that bound cleanly (see remember_shape) are kept in ~/.cache/natlint/shapes-DIGEST.json
# (JSON, in the same private directory as lark's cache; DIGEST covers the grammar, this module
# and lark), written once at exit when there are new ones: a later run that meets only known
# shapes never loads lark.

_SHAPES_FILE_LIMIT = 500  # the most recently added shapes are kept (a dump has a few dozen)
_disk: dict[str, bool] = {"loaded": False, "registered": False}
_NEW_SHAPES: dict[tuple[str, ...], tuple[Item, ...]] = {}
_ON_DISK: set[tuple[str, ...]] = set()
_Entry = list[Any]  # [shape words, [[name, at, args, negated, neg_at], ...]]


@cache
def _shapes_file() -> str | None:
    directory = _private_cache_dir()
    if directory is None:
        return None
    import hashlib
    from importlib.util import find_spec

    try:
        spec = find_spec("lark")
        origin = spec.origin if spec is not None else None
        lark_id = f"{origin}:{os.stat(origin).st_mtime_ns}" if origin else "-"
        this = Path(__file__).read_bytes()
    except (OSError, ValueError, ImportError):
        return None
    digest = hashlib.sha256(grammar_text().encode() + this + lark_id.encode()).hexdigest()[:16]
    return os.path.join(directory, f"shapes-{digest}.json")


def _read_entries(path: str) -> list[tuple[tuple[str, ...], tuple[Item, ...]]]:
    """The file's shapes and items, checked (a damaged or foreign file is ignored)."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    entries = []
    try:
        for words, raw_items in data:
            shape = tuple(words)
            items = tuple(Item(name, at, tuple(args), negated, neg_at) for name, at, args, negated, neg_at in raw_items)
            size = len(shape)
            if not all(type(w) is str for w in shape) or not all(
                type(it.name) is str and type(it.negated) is bool and -1 <= it.neg_at < size and 0 <= it.at < size
                and all(type(a) is int and 0 <= a < size for a in it.args)
                for it in items
            ):
                return []
            entries.append((shape, items))
    except (TypeError, ValueError):
        return []
    return entries


def _load_shapes_file() -> None:
    _disk["loaded"] = True
    path = _shapes_file()
    if path is not None:
        for shape, items in _read_entries(path):
            _SHAPES.setdefault(shape, items)
            _ON_DISK.add(shape)


def remember_shape(shape: tuple[str, ...]) -> None:
    """Keep this parsed shape in the shapes file (for shapes of well-formed lines: a file full
    of broken lines should not push the common shapes out)."""
    items = _SHAPES.get(shape)
    if not isinstance(items, tuple) or shape in _NEW_SHAPES or shape in _ON_DISK:
        return
    if len(_NEW_SHAPES) < _SHAPES_FILE_LIMIT:
        _NEW_SHAPES[shape] = items
    if not _disk["registered"]:
        _disk["registered"] = True
        atexit.register(_save_shapes_file)


def _save_shapes_file() -> None:
    """Add the shapes parsed in this process to the file (atomically; the newest are kept)."""
    path = _shapes_file()
    if path is None or not _NEW_SHAPES:
        return
    import json
    import tempfile

    merged = dict(_read_entries(path))
    for shape, items in _NEW_SHAPES.items():
        merged.pop(shape, None)
        merged[shape] = items
    entries: list[_Entry] = [
        [list(shape), [[it.name, it.at, list(it.args), it.negated, it.neg_at] for it in items]]
        for shape, items in list(merged.items())[-_SHAPES_FILE_LIMIT:]
    ]
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".shapes-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entries, f, separators=(",", ":"))
            os.replace(tmp, path)
            _ON_DISK.update(_NEW_SHAPES)
        except BaseException:
            os.unlink(tmp)
            raise
        for name in os.listdir(os.path.dirname(path)):  # files of other grammars are stale
            if name.startswith("shapes-") and name.endswith(".json") and name != os.path.basename(path):
                os.unlink(os.path.join(os.path.dirname(path), name))
    except OSError:
        pass  # a cache: never fail because of it
    _NEW_SHAPES.clear()


def _parse_shape(shape: tuple[str, ...]) -> tuple[Item, ...] | LineSyntaxError:
    from lark import Token, Tree
    from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

    offsets: dict[int, int] = {}
    pos = 0
    for index, word in enumerate(shape):
        offsets[pos] = index
        pos += len(word) + 1
    text = " ".join(shape)
    try:
        tree = _parser().parse(text)
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            return LineSyntaxError(_expected_message(exc.expected), None)
        at = offsets.get(tok.start_pos or 0)
        return LineSyntaxError(_unexpected_message(shape, at), at)
    except UnexpectedCharacters as exc:
        at = _index_at(offsets, exc.pos_in_stream or 0)
        return LineSyntaxError(_unexpected_message(shape, at), at)
    except UnexpectedInput as exc:  # pragma: no cover - other lark errors
        return LineSyntaxError(str(exc).splitlines()[0], None)

    items: list[Item] = []
    for item in tree.children:
        assert isinstance(item, Tree)
        neg_at = -1
        option = item.children[-1]
        if len(item.children) == 2:
            neg = item.children[0]
            assert isinstance(neg, Token)
            neg_at = offsets[neg.start_pos or 0]
        assert isinstance(option, Tree)
        toks = [t for t in option.children if isinstance(t, Token)]
        indices = [offsets[t.start_pos or 0] for t in toks]
        name = str(option.data)
        if name == "unknown_option":
            name = "?" + shape[indices[0]]
        items.append(Item(name, indices[0], tuple(indices[1:]), neg_at >= 0, neg_at))
    return tuple(items)


def _index_at(offsets: dict[int, int], pos: int) -> int | None:
    best = None
    for start, index in offsets.items():
        if start <= pos:
            best = index
    return best


def _unexpected_message(shape: tuple[str, ...], index: int | None) -> str:
    if index is None:
        return "this line cannot be parsed"
    word = shape[index]
    if word == "!":
        return "'!' must stand right before the option it negates, and only once"
    if word in ("@", "0"):
        prev = shape[index - 1] if index > 0 else ""
        if prev == "!":
            return (
                "'!' must come before the option, not after it: write '! -s ADDR', not '-s ! ADDR'"
                " (the old form was removed in iptables 1.4.12)"
            )
        return "unexpected argument: it does not belong to any option (a missing option name or an extra word?)"
    return f"unexpected '{word}'"


def _expected_message(expected: set[str]) -> str:
    if expected & {"ARG", "NUMBER"}:
        return "the option at the end of the line needs an argument"
    return "the line ends too early"


def option_spellings_for(names: frozenset[str]) -> dict[str, str]:
    """The spellings of the given canonical option names (for unique-prefix abbreviations)."""
    return {s: n for s, n in SPELLINGS.items() if n in names}
