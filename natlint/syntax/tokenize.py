"""Split one iptables-restore line into words exactly as iptables-restore does.

This is the state machine of ``add_param_to_argv`` in iptables' ``xshared.c`` (1.8.x):

* words are separated by runs of space, tab and newline (not ``\\r``: a CRLF file keeps
  the ``\\r`` in its last word, which is why iptables-restore rejects such files);
* a ``"`` outside quotes opens a quote without ending the current word (``x"y z"`` is
  ``xy z``);
* inside quotes a backslash escapes any character and a ``"`` closes the quote *and* ends
  the word, even an empty one (``""`` is an empty argument, ``"ab"cd`` is ``ab`` + ``cd``);
* outside quotes a backslash is an ordinary character; single quotes are ordinary;
* an unterminated quote runs to the end of the line (iptables accepts it silently).

``shlex`` is not equivalent and must not be used.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Word", "split_words"]

_SEPARATORS = frozenset(" \t\n")


class Word(NamedTuple):
    """One argument of a rule line and where it starts (0-based column)."""

    text: str
    column: int
    quoted: bool


def split_words(line: str) -> list[Word]:
    """Return the words of ``line`` as iptables-restore's tokenizer produces them."""
    if '"' not in line and "\r" not in line and "\x0b" not in line and "\x0c" not in line:
        return _split_plain(line)
    return _split_quoted(line)


def _split_plain(line: str) -> list[Word]:
    # Fast path: no quotes and only ASCII separators that str.split() treats the same way.
    words: list[Word] = []
    find = line.find
    pos = 0
    for text in line.split():
        pos = find(text, pos)
        words.append(Word(text, pos, False))
        pos += len(text)
    return words


def _split_quoted(line: str) -> list[Word]:
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
    if buf:
        words.append(Word("".join(buf), start, quoted))
    return words
