"""Markdown, as models write it, turned into plain text LINE shows as meant.

LINE renders no Markdown: `**bold**` arrives with its stars. So headings and emphasis
lose their markers, bullets become "• ", numbered lists stay, fenced code keeps its
content without the fences, links read "text (URL)" and tables become one line per row.
Pure functions, no Django: the same input always gives the same text.
"""
import re

BULLET = "• "

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^(\s*)[-*+][ \t]+(?:\[([ xX])\][ \t]+)?")
_ORDERED = re.compile(r"^(\s*)(\d{1,9})([.)])[ \t]+")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?")
_TABLE_RULE = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_REFERENCE = re.compile(r"^ {0,3}\[([^\]]+)\]:[ \t]*<?(\S+?)>?(?:[ \t]+[\"'(].*[\"')])?[ \t]*$")

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^\s)>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_LINK = re.compile(r"\[([^\]]+)\]\(\s*<?([^\s)>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[([^\]]*)\]")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s>]+)>")
_BARE_URL = re.compile(r"https?://[^\s<>\[\]()]+")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.DOTALL)
_STAR_ITALIC = re.compile(r"(?<![*\\])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*\\])\*(?!\*)")
_UNDERSCORE_ITALIC = re.compile(r"(?<![\w\\])_(?=[^\s_])([^_\n]+?)(?<=[^\s_\\])_(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDERS = re.compile(r"\x00(\d+)\x00")


def to_line_text(markdown: str) -> str:
    """The Markdown answer as plain text for LINE (see the module's docstring)."""
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n")
    lines = markdown.split("\n")
    references = _references(lines)
    out: list[str | None] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            index = _code_block(lines, index, fence.group(1), out)
            continue
        if _is_table_start(lines, index):
            index = _table(lines, index, out, references)
            continue
        if _REFERENCE.match(line):
            index += 1  # a link's target, shown beside its text instead
            continue
        out.append(_block_line(line, out, references))
        index += 1
    return _tidy(out)


def _code_block(lines: list[str], start: int, fence: str, out: list[str | None]) -> int:
    """Copies a fenced block's content as it is; returns the index after its closing fence."""
    index = start + 1
    while index < len(lines):
        closing = _FENCE.match(lines[index])
        if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) \
                and not lines[index].strip()[len(closing.group(1)):].strip():
            return index + 1
        out.append(lines[index].rstrip())
        index += 1
    return index  # an unclosed fence runs to the end, as in CommonMark


def _block_line(line: str, out: list[str | None], references: dict[str, str]) -> str | None:
    """One line outside code and tables; None drops it."""
    after_text = bool(out and out[-1] and out[-1].strip())
    if _RULE.match(line):
        # A thematic break (or, under text, a setext heading's underline): a gap at most.
        return None if after_text else ""
    if _SETEXT_UNDERLINE.match(line) and after_text:
        return None
    heading = _ATX_HEADING.match(line)
    if heading:
        return _inline(heading.group(1) or "", references)
    while _QUOTE.match(line):
        line = _QUOTE.sub("", line, count=1)
    bullet = _BULLET.match(line)
    if bullet:
        box = {" ": "☐ ", "x": "☑ ", "X": "☑ "}.get(bullet.group(2) or "", "")
        return bullet.group(1) + BULLET + box + _inline(line[bullet.end():], references)
    ordered = _ORDERED.match(line)
    if ordered:
        return ordered.group(1) + ordered.group(2) + ". " + _inline(line[ordered.end():], references)
    return _inline(line, references)


def _is_table_start(lines: list[str], index: int) -> bool:
    return ("|" in lines[index] and index + 1 < len(lines) and "-" in lines[index + 1]
            and bool(_TABLE_RULE.match(lines[index + 1]))
            and len(_cells(lines[index])) == len(_cells(lines[index + 1])))


def _table(lines: list[str], start: int, out: list[str | None], references: dict[str, str]) -> int:
    """A table as lines: two columns as "a：b", more as "a | b | c"; returns the index after it."""
    rows = [_cells(lines[start])]
    index = start + 2
    while index < len(lines) and "|" in lines[index] and lines[index].strip():
        rows.append(_cells(lines[index]))
        index += 1
    for row in rows:
        cells = [_inline(cell, references) for cell in row]
        if not any(cells):
            continue
        out.append("：".join(cells) if len(cells) == 2 else " | ".join(cells))
    return index


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _references(lines: list[str]) -> dict[str, str]:
    """Reference definitions (`[id]: url`) outside code blocks, by lower-cased id."""
    found: dict[str, str] = {}
    fence = None
    for line in lines:
        match = _FENCE.match(line)
        if match:
            fence = None if fence and match.group(1)[0] == fence else (fence or match.group(1)[0])
            continue
        if fence is None:
            definition = _REFERENCE.match(line)
            if definition:
                found.setdefault(definition.group(1).lower(), definition.group(2))
    return found


def _inline(text: str, references: dict[str, str]) -> str:
    """Emphasis markers dropped, links as "text (URL)"; code spans kept as they are."""
    kept: list[str] = []

    def keep(value: str) -> str:
        kept.append(value)
        return _PLACEHOLDER.format(len(kept) - 1)

    text = _CODE_SPAN.sub(lambda m: keep(m.group(2).strip() if m.group(2).strip() else m.group(2)), text)
    text = _AUTOLINK.sub(lambda m: keep(m.group(1)), text)
    text = _IMAGE.sub(lambda m: keep(_link(m.group(1), m.group(2))), text)
    text = _LINK.sub(lambda m: keep(_link(_emphasis(m.group(1)), m.group(2))), text)

    def reference(match: re.Match) -> str:
        url = references.get((match.group(2) or match.group(1)).lower())
        return keep(_link(_emphasis(match.group(1)), url)) if url else match.group(0)

    text = _REF_LINK.sub(reference, text)
    text = _BARE_URL.sub(lambda m: keep(m.group(0)), text)  # an underscore in a URL is not emphasis
    text = _emphasis(text)
    text = _LINE_BREAK_TAG.sub("\n", text)
    text = _ESCAPE.sub(r"\1", text)
    return _PLACEHOLDERS.sub(lambda m: kept[int(m.group(1))], text).rstrip()


def _emphasis(text: str) -> str:
    for pattern in (_BOLD, _STRIKE):
        text = pattern.sub(lambda m: m.group(m.lastindex), text)
    text = _STAR_ITALIC.sub(r"\1", text)
    return _UNDERSCORE_ITALIC.sub(r"\1", text)


def _link(text: str, url: str) -> str:
    text = text.strip()
    if not text or text == url or text == url.removeprefix("mailto:"):
        return url.removeprefix("mailto:")
    return f"{text} ({url.removeprefix('mailto:')})"


def _tidy(lines: list[str | None]) -> str:
    """Drops removed lines, keeps at most one empty line in a row, trims the ends."""
    kept: list[str] = []
    for line in lines:
        if line is None:
            continue
        if not line.strip() and kept and not kept[-1].strip():
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip("\n")
