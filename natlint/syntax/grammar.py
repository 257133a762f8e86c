"""The lark grammar of one command line, and a cache that parses each line *shape* once.

A kube-proxy dump has 100k lines but only a few dozen distinct shapes: ``-A @ -d @ -p tcp
-m comment --comment @ -m tcp --dport 0 -j @``. Option words are kept, argument words are
replaced by a placeholder (``0`` for digits, ``@`` for anything else, so optional numeric
arguments still parse the same way). lark parses each new shape once; every later line of
that shape only binds its words to the cached :class:`Item` list. The grammar stays the single
definition of the language: a shape is itself a valid line, parsed by the same grammar.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # lark is imported lazily: most runs of a small file never need it twice
    from lark import Lark

__all__ = ["Item", "LineSyntaxError", "grammar_path", "grammar_text", "parse_words", "SPELLINGS", "COMMANDS"]

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


def _private_cache_file() -> str | bool:
    """A lark cache file in a directory only this user can write, or False (no cache).

    lark's ``cache=True`` unpickles a predictable file in /tmp: a local user could plant a
    pickle that runs when root runs natlint. A 0700 directory we own is safe.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = os.path.join(base, "natlint")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        info = os.stat(directory)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return False
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


def parse_words(words: list[str]) -> tuple[Item, ...]:
    """Parse a line's words (already split by the tokenizer) into its items."""
    shape = tuple([_shape_word(w) for w in words])
    found = _SHAPES.get(shape)
    if found is None:
        found = _parse_shape(shape)
        if len(_SHAPES) < 100_000:
            _SHAPES[shape] = found
    if isinstance(found, LineSyntaxError):
        raise found
    return found


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
