"""GRUB's word splitting, for the tests: what a grub.cfg line means as GRUB reads it.

grub-script-check says whether grub.cfg parses; this says what its words are, so a test can
check that a label or a kernel argument came out as the same data and not as syntax. It follows
GRUB's lexer (grub-core/script/yylex.l) for the forms a grub.cfg of pxeprov's has: words split
at blanks; `\\c` is c; inside '...' every character is data; inside "..." `\\` escapes `\\ " $`
and a newline; an unquoted or double-quoted `$name` / `${name}` is a variable; `;` `|` `&` `<`
`>` `{` `}` outside quotes are GRUB's own tokens; `#` at the start of a word starts a comment.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL = set(";|&<>{}")


class GrubSyntax(Exception):
    pass


@dataclass(frozen=True)
class Word:
    text: str
    expands: bool  # holds a variable that GRUB would expand
    token: bool  # one of GRUB's own tokens (`;`, `{`, ...)


def words(line: str) -> list[Word]:
    out: list[Word] = []
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            i += 1
            continue
        if c == "#":
            break
        if c in SPECIAL:
            out.append(Word(c, False, True))
            i += 1
            continue
        text, expands = [], False
        while i < n and line[i] not in " \t" and line[i] not in SPECIAL:
            c = line[i]
            if c == "\\":
                if i + 1 >= n:
                    raise GrubSyntax("backslash at the end of the line")
                text.append(line[i + 1])
                i += 2
            elif c == "'":
                end = line.find("'", i + 1)
                if end < 0:
                    raise GrubSyntax("unterminated '")
                text.append(line[i + 1 : end])
                i = end + 1
            elif c == '"':
                i += 1
                while True:
                    if i >= n:
                        raise GrubSyntax('unterminated "')
                    c = line[i]
                    if c == '"':
                        i += 1
                        break
                    if c == "\\" and i + 1 < n and line[i + 1] in '\\"$':
                        text.append(line[i + 1])
                        i += 2
                        continue
                    if c == "$":
                        expands = True
                    text.append(c)
                    i += 1
            else:
                if c == "$":
                    expands = True
                text.append(c)
                i += 1
        out.append(Word("".join(text), expands, False))
    return out
