"""Go-flavoured strings of Slime's configuration: regexp.Expand templates, Helm-style dispatch clusters, RE2.

Expected strings are written by hand from Go's documented rules (regexp.Expand: "$name ... the longest
sequence of letters, digits, and underscores"; "${name}" brackets; "$$" is a literal $; a reference to a
missing or non-participating group is the empty string; a number names a group by index).
"""

from __future__ import annotations

import re

import pytest

from lazystream.domain.templates import (
    RegexError,
    TemplateError,
    check_alias_template,
    compile_re2,
    dispatch_cluster_keys,
    expand_template,
    render_dispatch_cluster,
    template_refs,
)

TUTORIAL = re.compile(r"(?P<service>[^\.]+)\.(?P<namespace>[^\.]+)\.svc\.cluster\.local$")
HOST = "details.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$namespace.$service.mailsaas", "default.details.mailsaas"),  # Slime's tutorial example
        ("${namespace}.${service}", "default.details"),
        ("$namespace-x", "default-x"),  # '-' ends a name
        ("$namespace_x", ""),  # '_' does not: the group "namespace_x" does not exist
        ("${namespace}_x", "default_x"),
        ("$1.$2", "details.default"),
        ("${1}x", "detailsx"),
        ("$1x", ""),  # the group *named* "1x", which does not exist
        ("$01", ""),  # a leading zero makes it a name, not group 1
        ("$0", "details.default.svc.cluster.local"),  # group 0 is the whole match
        ("$3", ""),  # no group 3
        ("$1000000000", ""),  # ten digits: a name, not a number
        ("$$service", "$service"),
        ("$$$service", "$details"),
        ("a$$b", "a$b"),
        ("cost $", "cost $"),  # a final '$' starts no reference: copied
        ("$-x", "$-x"),
        ("$ namespace", "$ namespace"),
        ("${service", "${service"),  # unclosed brace: the '$' is copied, then the rest as text
        ("${}", "${}"),
        ("${service-x}", "${service-x}"),  # '-' inside braces: malformed, copied
        ("${namespace}é", "defaulté"),
        ("$namespaceé", ""),  # 'é' is a letter, so it belongs to the name
        ("plain.host", "plain.host"),
        ("", ""),
    ],
)
def test_expand_template_follows_go(template: str, expected: str) -> None:
    match = TUTORIAL.search(HOST)
    assert match is not None
    assert expand_template(template, match) == expected


def test_expand_template_non_participating_group_is_empty() -> None:
    match = re.fullmatch(r"(?P<a>x)?(?P<b>y)", "y")
    assert match is not None
    assert expand_template("$a|$b|${1}|$2", match) == "|y||y"


def test_template_refs_read_names_as_go_does() -> None:
    refs = template_refs("$ns.${svc}x$1$1x$$y")
    assert [(r.text, r.name, r.number) for r in refs] == [
        ("$ns", "ns", None),
        ("${svc}", "svc", None),
        ("$1", "1", 1),
        ("$1x", "1x", None),
    ]


@pytest.mark.parametrize(
    "template",
    ["$namespace.$service.mailsaas", "${service}_x", "$1.$2", "$0", "$$literal", "static.example.com", ""],
)
def test_valid_alias_templates(template: str) -> None:
    check_alias_template(template, TUTORIAL)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("$svc", "$svc refers to no named group of the pattern (named groups: namespace, service)"),
        (
            "$service_x",
            "$service_x refers to no named group of the pattern (named groups: namespace, service); "
            "Go reads $service_x as the group named 'service_x': write ${service}_x",
        ),
        (
            "$1x",
            "$1x refers to no named group of the pattern (named groups: namespace, service); "
            "Go reads $1x as the group named '1x': write ${1}x for group 1",
        ),
        ("${3}", "${3} refers to group 3, but the pattern has 2 group(s)"),
        (
            "cost $",
            "the $ at offset 5 starts no group reference (write $name, ${name} or $1, or $$ for a literal $)",
        ),
        (
            "${service",
            "the $ at offset 0 starts no group reference (write $name, ${name} or $1, or $$ for a literal $)",
        ),
    ],
)
def test_invalid_alias_templates_say_why(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as exc:
        check_alias_template(template, TUTORIAL)
    assert str(exc.value) == message


def test_alias_template_on_a_pattern_without_named_groups() -> None:
    with pytest.raises(
        TemplateError, match=r"^\$x refers to no named group of the pattern \(the pattern has no"
    ):
        check_alias_template("$x", re.compile(r"(a)"))


@pytest.mark.parametrize(
    ("cluster", "values", "expected"),
    [
        ("_GLOBAL_SIDECAR", {}, "_GLOBAL_SIDECAR"),
        ("PassthroughCluster", {}, "PassthroughCluster"),
        (
            "outbound|80||egress1.testns.svc.cluster.local",
            {},
            "outbound|80||egress1.testns.svc.cluster.local",
        ),
        ("{{ .Values.egress }}", {"egress": "outbound|80||e.ns"}, "outbound|80||e.ns"),
        ("{{.Values.egress}}", {"egress": "e"}, "e"),
        (
            '{{ print "outbound|80||" .Values.foo ".svc" }}',
            {"foo": "egress.mesh"},
            "outbound|80||egress.mesh.svc",
        ),
        # Slime's documented form, parentheses included
        (
            '{{ (print .Values.foo "." .Values.namespace ) }}',
            {"foo": "egress", "namespace": "ns"},
            "egress.ns",
        ),
        (
            "outbound|80||{{ .Values.host }}.svc.cluster.local",
            {"host": "e.ns"},
            "outbound|80||e.ns.svc.cluster.local",
        ),
        ('{{ print "a}}b" }}', {}, "a}}b"),
        ('{{ print "q\\"q" `raw\\n` }}', {}, 'q"qraw\\n'),
        ("{{ print }}x", {}, "x"),
        ('{{ print (print "a" "b") "c" }}', {}, "abc"),
    ],
)
def test_render_dispatch_cluster(cluster: str, values: dict[str, str], expected: str) -> None:
    assert render_dispatch_cluster(cluster, values) == expected


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ("{{ .Values.missing }}", ".Values.missing is not set (add missing to the values section)"),
        ("{{ .Values.a.b }}", "unsupported operand '.Values.a.b' (only top-level keys of .Values)"),
        ("{{ .Values.a | upper }}", "unexpected '| upper'"),
        ('{{ include "x" . }}', "unsupported function 'include'"),
        ("{{ .Release.Name }}", "unsupported operand '.Release.Name'"),
        ("{{ }}", "an empty action"),
        ("{{ .Values.a", "an unclosed {{"),
        ('{{ "open }}', "an unclosed {{"),
        ("{{- .Values.a }}", "unsupported template syntax"),
        ("{{/* note */}}", "unsupported template syntax"),
        ('{{ print "\\q" }}', "an unsupported escape \\q"),
        ("{{ (print .Values.a }}", "an unclosed '('"),
    ],
)
def test_unsupported_dispatch_clusters_fail(cluster: str, message: str) -> None:
    with pytest.raises(TemplateError) as exc:
        render_dispatch_cluster(cluster, {"a": "x"})
    assert message in str(exc.value)


def test_dispatch_cluster_keys() -> None:
    assert dispatch_cluster_keys('{{ print .Values.a "-" .Values.b }}/{{ .Values.a }}') == {"a", "b"}
    assert dispatch_cluster_keys("PassthroughCluster") == frozenset()


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        (r"^(?:[^.])+$", "reviews", True),  # Slime's documented short-name dispatch
        (r"(?P<svc>[^.]+)\.(?P<ns>[^.]+)", "a.b", True),
        (r"(?<svc>[^.]+)\.x", "a.x", True),  # Go 1.22 spelling of a named group
        (r"^foo\z", "foo", True),  # RE2's end of text
        (r"^foo\z", "foo\n", False),
        (r"a{2}b", "aab", True),
        (r"a}+", "a}}", True),  # a literal '}' repeated is not possessive
        (r"[a-z--]+", "a-b", True),  # '--' in a class is literal (Python's FutureWarning is silenced)
    ],
)
def test_compile_re2_accepts_re2(pattern: str, text: str, matches: bool) -> None:
    assert (compile_re2(pattern).search(text) is not None) == matches


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "missing ), unterminated subpattern at position 0"),
        ("foo(?=bar)", "look-ahead at offset 3 is not supported by RE2"),
        ("(?!x)", "negative look-ahead at offset 0 is not supported by RE2"),
        ("(?<=x)y", "look-behind at offset 0 is not supported by RE2"),
        ("(?<!x)y", "negative look-behind at offset 0 is not supported by RE2"),
        (r"(a)\1", "back-reference \\1 at offset 3 is not supported by RE2"),
        ("(?P<a>x)(?P=a)", "a named back-reference at offset 8 is not supported by RE2"),
        ("a*+", "possessive repetition *+ at offset 1 is not supported by RE2"),
        ("a{2}+", "possessive repetition }+ at offset 3 is not supported by RE2"),
        ("(?>a)", "an atomic group at offset 0 is not supported by RE2"),
        ("[[:alpha:]]", "the POSIX class at offset 1 is not supported here: list the characters"),
    ],
)
def test_compile_re2_rejects_what_re2_lacks(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as exc:
        compile_re2(pattern)
    assert str(exc.value) == message
