"""The small template and regular-expression languages that Slime's configuration borrows from Go.

Slime's configuration holds three kinds of Go-flavoured strings, and lazystream reads all of them in Python:

* **Alias templates** (``general.domainAliases[].templates``) use Go's ``regexp.Expand`` syntax:
  :func:`expand_template` implements it exactly, and :func:`check_alias_template` rejects, at load time, a
  template that refers to a group its pattern does not have (Go would silently expand it to nothing).
* **Dispatch clusters** (``general.dispatches[].cluster``) may be Helm templates in Slime. lazystream accepts
  the simple form only: ``{{ .Values.<key> }}``, string literals, and ``print`` joining such terms, e.g.
  ``{{ print "outbound|80||" .Values.egress ".svc" }}`` (:func:`render_dispatch_cluster`).
* **Regular expressions** (alias patterns, dispatch ``domainRegex``, ``proxyVersion``) are RE2, the syntax
  of Go and of Envoy. :func:`compile_re2` compiles them with Python's :mod:`re`, translating the few RE2
  spellings Python lacks and rejecting what RE2 does not have (look-around, back-references), so a pattern
  that passes here also works in Envoy.

Pure Python, no third-party imports: the domain code uses these functions as well as the configuration.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "RegexError",
    "TemplateError",
    "TemplateRef",
    "check_alias_template",
    "compile_re2",
    "dispatch_cluster_keys",
    "expand_template",
    "render_dispatch_cluster",
    "template_refs",
]


class TemplateError(ValueError):
    """A template that lazystream cannot use; the message says what is wrong with it."""


class RegexError(ValueError):
    """A regular expression that is not valid RE2 (or that Python cannot compile)."""


# --- Go regexp.Expand --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """One ``$name``, ``${name}`` or ``$1`` reference in an alias template."""

    text: str
    """The reference as written, e.g. ``$service`` or ``${1}``."""

    name: str
    """The group name as Go reads it: the longest run of letters, digits and ``_`` (``$1x`` names ``1x``)."""

    number: int | None
    """The group number when Go reads the name as one (ASCII digits, no leading zero, at most 9 digits)."""


@dataclass(frozen=True, slots=True)
class _Dollar:
    """A ``$`` that starts no valid reference: Go copies it through as a literal ``$``."""

    offset: int


def _is_name_char(char: str) -> bool:
    # Go's extract(): unicode.IsLetter (category L*), unicode.IsDigit (category Nd) or '_'.
    return char.isalpha() or char.isdecimal() or char == "_"


def _group_number(name: str) -> int | None:
    """Go reads a name as a group number when it is ASCII digits, without a leading zero, below 1e9."""
    if not name.isascii() or not name.isdigit() or len(name) > 9:
        return None
    if name[0] == "0" and len(name) > 1:
        return None
    return int(name)


def _extract(text: str) -> tuple[str, int] | None:
    """The group name at the start of ``text`` (just after a ``$``) and how many characters it takes."""
    braced = text.startswith("{")
    body = text[1:] if braced else text
    end = 0
    while end < len(body) and _is_name_char(body[end]):
        end += 1
    if end == 0:
        return None
    if braced:
        if end >= len(body) or body[end] != "}":
            return None
        return body[:end], end + 2
    return body[:end], end


def _parse_expand_template(template: str) -> list[str | TemplateRef | _Dollar]:
    parts: list[str | TemplateRef | _Dollar] = []
    pos = 0
    while (dollar := template.find("$", pos)) >= 0:
        parts.append(template[pos:dollar])
        after = template[dollar + 1 :]
        if after.startswith("$"):  # "$$" is a literal "$"
            parts.append("$")
            pos = dollar + 2
            continue
        extracted = _extract(after)
        if extracted is None:
            parts.append(_Dollar(dollar))
            pos = dollar + 1
            continue
        name, length = extracted
        parts.append(TemplateRef(template[dollar : dollar + 1 + length], name, _group_number(name)))
        pos = dollar + 1 + length
    parts.append(template[pos:])
    return [part for part in parts if part != ""]


def template_refs(template: str) -> list[TemplateRef]:
    """The group references of an alias template, in order."""
    return [part for part in _parse_expand_template(template) if isinstance(part, TemplateRef)]


def _group_text(match: re.Match[str], ref: TemplateRef) -> str:
    if ref.number is not None:
        if ref.number > match.re.groups:
            return ""
        return match.group(ref.number) or ""
    if ref.name not in match.re.groupindex:
        return ""
    return match.group(ref.name) or ""


def expand_template(template: str, match: re.Match[str]) -> str:
    """Expand ``template`` with the groups of ``match``, exactly as Go's ``Regexp.ExpandString`` does.

    * ``$name`` takes the longest run of letters, digits and ``_`` after the ``$``: ``$namespace.$service``
      is two references, but ``$service_x`` refers to a group named ``service_x``.
    * ``${name}`` delimits the name: ``${service}_x``.
    * A name that is a number (``$1``, ``${1}``) refers to a group by number; ``$0`` is the whole match.
      ``$1x`` is the group *named* ``1x``, and ``$01`` the group named ``01``.
    * ``$$`` is a literal ``$``; a ``$`` that starts no valid reference (``$-``, ``${x``, a final ``$``) is
      copied as it is.
    * A reference to a group that does not exist, or did not take part in the match, expands to nothing.
    """
    out: list[str] = []
    for part in _parse_expand_template(template):
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, _Dollar):
            out.append("$")
        else:
            out.append(_group_text(match, part))
    return "".join(out)


def check_alias_template(template: str, pattern: re.Pattern[str]) -> None:
    """Raise :class:`TemplateError` unless every reference in ``template`` names a group of ``pattern``.

    Go expands such a reference to nothing without a word; lazystream refuses it at start instead. A ``$``
    that starts no reference is refused too (write ``$$`` for a literal ``$``).
    """
    named = sorted(pattern.groupindex)
    for part in _parse_expand_template(template):
        if isinstance(part, _Dollar):
            raise TemplateError(
                f"the $ at offset {part.offset} starts no group reference "
                "(write $name, ${name} or $1, or $$ for a literal $)"
            )
        if not isinstance(part, TemplateRef):
            continue
        if part.number is not None:
            if part.number > pattern.groups:
                raise TemplateError(
                    f"{part.text} refers to group {part.number}, "
                    f"but the pattern has {pattern.groups} group(s)"
                )
            continue
        if part.name in pattern.groupindex:
            continue
        groups = f"named groups: {', '.join(named)}" if named else "the pattern has no named groups"
        hint = ""
        if part.name[0].isdigit():
            digits = re.match(r"\d+", part.name)
            lead = digits.group(0) if digits else part.name
            hint = (
                f"; Go reads {part.text} as the group named {part.name!r}: "
                f"write ${{{lead}}}{part.name[len(lead) :]} for group {lead}"
            )
        else:
            prefix = next((n for n in named if part.name.startswith(n)), None)
            if prefix is not None:
                hint = (
                    f"; Go reads {part.text} as the group named {part.name!r}: "
                    f"write ${{{prefix}}}{part.name[len(prefix) :]}"
                )
        raise TemplateError(f"{part.text} refers to no named group of the pattern ({groups}){hint}")


# --- Helm-style dispatch clusters --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ValueRef:
    key: str


_VALUES_REF = re.compile(r"\.Values\.([A-Za-z_][A-Za-z0-9_]*)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUPPORTED = 'lazystream supports {{ .Values.<key> }}, "literals" and {{ print ... }} of those'
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


class _ActionParser:
    """Parses the inside of one ``{{ ... }}`` action into literal strings and ``.Values`` references."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> TemplateError:
        return TemplateError(f"{what} in {{{{{self.text}}}}} ({_SUPPORTED})")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def parse(self) -> list[str | _ValueRef]:
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.error("an empty action")
        result = self.pipeline()
        self.skip_space()
        if self.pos < len(self.text):
            raise self.error(f"unexpected {self.text[self.pos :].strip()!r}")
        return result

    def pipeline(self) -> list[str | _ValueRef]:
        """``print arg...`` or a single operand."""
        ident = _IDENT.match(self.text, self.pos)
        if ident is None:
            return self.operand()
        if ident.group(0) != "print":
            raise self.error(f"unsupported function {ident.group(0)!r}")
        self.pos = ident.end()
        parts: list[str | _ValueRef] = []
        while True:
            self.skip_space()
            if self.pos >= len(self.text) or self.text[self.pos] == ")":
                return parts
            parts.extend(self.operand())

    def operand(self) -> list[str | _ValueRef]:
        self.skip_space()
        if self.pos >= len(self.text):
            raise self.error("a missing operand")
        char = self.text[self.pos]
        if char == "(":
            self.pos += 1
            self.skip_space()
            inner = self.pipeline()
            self.skip_space()
            if self.pos >= len(self.text) or self.text[self.pos] != ")":
                raise self.error("an unclosed '('")
            self.pos += 1
            return inner
        if char == '"':
            return [self.quoted()]
        if char == "`":
            end = self.text.find("`", self.pos + 1)
            if end < 0:
                raise self.error("an unterminated raw string")
            literal = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return [literal]
        ref = _VALUES_REF.match(self.text, self.pos)
        if ref is None:
            raise self.error(f"unsupported operand {self.text[self.pos :].split()[0]!r}")
        self.pos = ref.end()
        if self.pos < len(self.text) and not (self.text[self.pos].isspace() or self.text[self.pos] == ")"):
            written = self.text[ref.start() :].split()[0].split(")")[0]
            raise self.error(f"unsupported operand {written!r} (only top-level keys of .Values)")
        return [_ValueRef(ref.group(1))]

    def quoted(self) -> str:
        out: list[str] = []
        pos = self.pos + 1
        while pos < len(self.text):
            char = self.text[pos]
            if char == '"':
                self.pos = pos + 1
                return "".join(out)
            if char == "\\":
                escaped = self.text[pos + 1 : pos + 2]
                if escaped not in _ESCAPES:
                    raise self.error(f"an unsupported escape \\{escaped}")
                out.append(_ESCAPES[escaped])
                pos += 2
                continue
            out.append(char)
            pos += 1
        raise self.error("an unterminated string")


def _find_action_end(template: str, start: int) -> int:
    """Index of the ``}}`` that closes the action starting at ``start`` (skipping ``}}`` inside quotes)."""
    pos = start
    quote = ""
    while pos < len(template):
        char = template[pos]
        if quote:
            if char == "\\" and quote == '"':
                pos += 2
                continue
            if char == quote:
                quote = ""
        elif char in '"`':
            quote = char
        elif template.startswith("}}", pos):
            return pos
        pos += 1
    raise TemplateError(f"an unclosed {{{{ in {template!r}")


def _parse_cluster(cluster: str) -> list[str | _ValueRef]:
    parts: list[str | _ValueRef] = []
    pos = 0
    while (start := cluster.find("{{", pos)) >= 0:
        parts.append(cluster[pos:start])
        end = _find_action_end(cluster, start + 2)
        inner = cluster[start + 2 : end]
        if inner.startswith(("-", "/*")) or inner.endswith("-"):
            raise TemplateError(f"unsupported template syntax {{{{{inner}}}}} ({_SUPPORTED})")
        parts.extend(_ActionParser(inner).parse())
        pos = end + 2
    parts.append(cluster[pos:])
    return [part for part in parts if part != ""]


def dispatch_cluster_keys(cluster: str) -> frozenset[str]:
    """The ``.Values`` keys a dispatch ``cluster`` refers to; raises :class:`TemplateError` on bad syntax."""
    return frozenset(part.key for part in _parse_cluster(cluster) if isinstance(part, _ValueRef))


def render_dispatch_cluster(cluster: str, values: Mapping[str, str]) -> str:
    """Render a dispatch ``cluster`` value as Helm's ``tpl`` would, for the subset lazystream supports.

    A value without ``{{`` is returned as it is (``_GLOBAL_SIDECAR``, ``PassthroughCluster``,
    ``outbound|80||egress.ns.svc.cluster.local``). Inside ``{{ }}`` the supported terms are
    ``.Values.<key>`` (looked up in ``values``), double-quoted or back-quoted string literals, and ``print``
    joining such terms, optionally in parentheses. Since every operand is a string, ``print`` concatenates
    them without spaces, as Go's ``fmt.Sprint`` does. Anything else, or a key missing from ``values``,
    raises :class:`TemplateError`.
    """
    out: list[str] = []
    for part in _parse_cluster(cluster):
        if isinstance(part, str):
            out.append(part)
        elif part.key in values:
            out.append(values[part.key])
        else:
            raise TemplateError(f".Values.{part.key} is not set (add {part.key} to the values section)")
    return "".join(out)


# --- RE2 ---------------------------------------------------------------------------------------------------

_UNSUPPORTED_GROUPS = {
    "(?=": "look-ahead",
    "(?!": "negative look-ahead",
    "(?<=": "look-behind",
    "(?<!": "negative look-behind",
    "(?P=": "a named back-reference",
    "(?>": "an atomic group",
    "(?(": "a conditional group",
    "(?#": "a comment group",
}
_COUNTED_REPEAT_END = re.compile(r"\{\d+(,\d*)?\}$")


def _translate_re2(pattern: str) -> str:
    """RE2 ``pattern`` in Python's spelling, or :class:`RegexError` for what RE2 does not support."""
    out: list[str] = []
    pos = 0
    in_class = False
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\":
            escaped = pattern[pos + 1 : pos + 2]
            if not in_class and escaped and escaped in "123456789":
                raise RegexError(f"back-reference \\{escaped} at offset {pos} is not supported by RE2")
            # RE2's end-of-text \z is Python's \Z.
            out.append("\\Z" if escaped == "z" and not in_class else char + escaped)
            pos += 2
            continue
        if in_class:
            if pattern.startswith("[:", pos):
                raise RegexError(
                    f"the POSIX class at offset {pos} is not supported here: list the characters"
                )
            if char == "]":
                in_class = False
            out.append(char)
            pos += 1
            continue
        if char == "[":
            in_class = True
            out.append(char)
            pos += 1
            # A ']' right after '[' or '[^' is a literal member of the class.
            for lead in ("^", "]"):
                if pattern.startswith(lead, pos):
                    out.append(lead)
                    pos += 1
            continue
        if char == "(":
            for prefix, what in _UNSUPPORTED_GROUPS.items():
                if pattern.startswith(prefix, pos):
                    raise RegexError(f"{what} at offset {pos} is not supported by RE2")
            if pattern.startswith("(?<", pos):  # RE2 (Go 1.22) also spells named groups (?<name>...)
                out.append("(?P<")
                pos += 3
                continue
        possessive = char in "*+?" or (char == "}" and _COUNTED_REPEAT_END.search(pattern[: pos + 1]))
        if possessive and pattern.startswith("+", pos + 1):
            raise RegexError(f"possessive repetition {char}+ at offset {pos} is not supported by RE2")
        out.append(char)
        pos += 1
    return "".join(out)


def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile an RE2 (Go / Envoy) regular expression with Python's :mod:`re`.

    Named groups may be written ``(?P<name>...)`` or ``(?<name>...)``; ``\\z`` means end of text. RE2 has no
    look-around, back-references, atomic groups or possessive repetition, so those raise
    :class:`RegexError` even though Python could compile them. Not supported here although RE2 has them:
    Unicode classes (``\\pL``) and POSIX classes (``[[:alpha:]]``).
    """
    translated = _translate_re2(pattern)
    try:
        with warnings.catch_warnings():
            # Python warns that "--", "&&", "~~" and "||" in a class may change meaning one day; in RE2 (and
            # in Python today) they are literal characters, which is what the pattern means.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(translated)
    except re.error as exc:
        raise RegexError(str(exc)) from None
