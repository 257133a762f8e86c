"""Split one iptables-restore line into words exactly as iptables-restore does.

This is the state machine of ``add_param_to_argv`` in iptables' ``xshared.c`` (1.8.x):

* words are separated by runs of space, tab and newline (not ``\\r``: a CRLF file keeps
  the ``\\r`` in its last word, which is why iptables-restore rejects such files);
* a ``"`` outside quotes opens a quote without ending the current word (``x"y z"`` is
  ``xy z``);
* inside quotes a backslash escapes any character and a ``"`` closes the quote *and* ends
  the word, even an empty one (``""`` is an empty argument, ``"ab"cd`` is ``ab`` + ``cd``);
* outside quotes a backslash is an ordinary character; single quotes are ordinary;
* an unterminated quote runs to the end of the line and takes the line's newline into the
  word (``-j "DROP`` jumps to ``DROP\\n``), except on a last line without a newline.

``shlex`` is not equivalent and must not be used.
"""

from __future__ import annotations

import re
from itertools import accumulate
from operator import add
from typing import NamedTuple

__all__ = ["Word", "split_words", "split_texts"]

_SEPARATORS = frozenset(" \t\n")
# Only these three separate words: a vertical tab, form feed, \x1c-\x1f or a no-break space
# is part of the word (str.split() would split on them; iptables-restore does not).
_PLAIN_WORD = re.compile(r"[^ \t\n]+")


class Word(NamedTuple):
    """One argument of a rule line and where it starts (0-based column)."""

    text: str
    column: int
    quoted: bool


def split_words(line: str, *, newline: bool = True) -> list[Word]:
    """Return the words of ``line`` (without its line end) as iptables-restore's tokenizer
    produces them; ``newline``: the line was ended by a newline in the file."""
    if '"' not in line:
        return [Word(m.group(), m.start(), False) for m in _PLAIN_WORD.finditer(line)]
    return _split_quoted(line, newline)


def split_texts(line: str, *, newline: bool = True) -> tuple[list[str], list[int]]:
    """The words of ``line`` as :func:`split_words` finds them, as two lists: their texts and
    their 0-based columns. Faster: a line of single-space separated words (most of a dump) is
    split by ``str.split``, a line whose quoted words stand alone is split around its quotes;
    anything else goes through the same state machine as :func:`split_words`."""
    if '"' not in line:
        if line and "\t" not in line and "  " not in line and "\n" not in line and line[0] != " " and line[-1] != " ":
            texts = line.split(" ")
            return texts, list(map(add, accumulate(map(len, texts), initial=0), range(len(texts))))
        texts = []
        columns = []
        for m in _PLAIN_WORD.finditer(line):
            texts.append(m.group())
            columns.append(m.start())
        return texts, columns
    found = _split_simple_quotes(line)
    if found is not None:
        return found
    words = _split_quoted(line, newline)
    return [w.text for w in words], [w.column for w in words]


def _split_simple_quotes(line: str) -> tuple[list[str], list[int]] | None:
    """Split a line whose quotes all pair up around whole words (``-m comment --comment "a b"
    -j X``), separated by single spaces, with no backslash; None for any other line."""
    parts = line.split('"')
    n = len(parts)
    if not n & 1 or "\\" in line or "\t" in line or "\n" in line:
        return None  # an unterminated quote, escapes, or other separators: the state machine
    texts: list[str] = []
    widths: list[int] = []  # each word's width in the line, quotes included
    last = n - 1
    for k in range(0, n, 2):  # parts[k] is outside quotes, parts[k + 1] inside
        seg = parts[k]
        if k:
            if seg:
                if seg[0] != " ":
                    return None  # '"ab"cd': a word right after a closing quote
                seg = seg[1:]
            elif k != last:
                return None  # '"a""b"'
        elif seg[:1] == " ":
            return None  # a space before the first word
        if k != last and seg:
            if seg[-1] != " ":
                return None  # 'x"y z"': a quote inside a word
            seg = seg[:-1]
            if not seg:
                return None  # two spaces between quoted words
        if seg:
            plain = seg.split(" ")
            if "" in plain:
                return None  # several spaces in a row, or a space at the start or the end
            texts += plain
            widths += map(len, plain)
        if k != last:
            quoted = parts[k + 1]
            texts.append(quoted)
            widths.append(len(quoted) + 2)
    return texts, list(map(add, accumulate(widths, initial=0), range(len(widths))))


def _split_quoted(line: str, newline: bool = True) -> list[Word]:
    words: list[Word] = []
    buf: list[str] = []
    start = -1
    quote_open = False
    escaped = False
    quoted = False
    for col, ch in enumerate(line):
        if quote_open:
            if escaped:
                buf.append(ch)
                escaped = False
                continue
            if ch == "\\":
                escaped = True
                continue
            if ch != '"':
                buf.append(ch)
                continue
            # A closing quote ends the word, even an empty one.
            quote_open = False
            words.append(Word("".join(buf), start, True))
            buf.clear()
            start = -1
            quoted = False
            continue
        if ch == '"':
            quote_open = True
            quoted = True
            if start < 0:
                start = col
            continue
        if ch in _SEPARATORS:
            if buf:
                words.append(Word("".join(buf), start, quoted))
                buf.clear()
                start = -1
                quoted = False
            continue
        if start < 0:
            start = col
        buf.append(ch)
    if quote_open and newline:
        buf.append("\n")  # fgets() keeps the newline, and the open quote takes it in
    if buf:
        words.append(Word("".join(buf), start, quoted))
    return words
