from __future__ import annotations

import pytest

from lazystream.domain.hosts import (
    HostProblem,
    is_dns_name,
    normalize_authority,
    service_fqdn,
    split_service_fqdn,
    wildcard_matches,
)


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("details", "details"),
        ("details:9080", "details"),
        ("Details.Default.SVC.cluster.local:9080", "details.default.svc.cluster.local"),
        ("www.example.org.", "www.example.org"),
        ("  reviews  ", "reviews"),
        ("a-b.c-d", "a-b.c-d"),
        ("x" * 63 + ".com", "x" * 63 + ".com"),
        (None, HostProblem.EMPTY),
        ("", HostProblem.EMPTY),
        ("-", HostProblem.EMPTY),
        (":80", HostProblem.EMPTY),
        ("10.96.0.1", HostProblem.IP_LITERAL),
        ("10.96.0.1:8080", HostProblem.IP_LITERAL),
        ("[::1]:80", HostProblem.IP_LITERAL),
        ("[fe80::1]", HostProblem.IP_LITERAL),
        ("2001:db8::1", HostProblem.IP_LITERAL),
        ("x" * 64 + ".com", HostProblem.INVALID),  # label over 63
        (".".join(["abcdefghi"] * 26), HostProblem.INVALID),  # 259 characters
        ("under_score.com", HostProblem.INVALID),
        ("-lead.com", HostProblem.INVALID),
        ("trail-.com", HostProblem.INVALID),
        ("a..b", HostProblem.INVALID),
        ("a.b..", HostProblem.INVALID),
        ("évil.com", HostProblem.INVALID),
        ("evil.com/../x", HostProblem.INVALID),
        ("*.example.com", HostProblem.INVALID),
        ("host:80:90", HostProblem.INVALID),
        ("a b", HostProblem.INVALID),
        ("host\n.com", HostProblem.INVALID),
    ],
)
def test_normalize_authority(authority: str | None, expected: str | HostProblem) -> None:
    assert normalize_authority(authority) == expected


def test_dns_names_are_lower_case_only() -> None:
    assert is_dns_name("a.b")
    assert not is_dns_name("A.b")
    assert not is_dns_name("")


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("*", "anything.at.all", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "badexample.com", False),
        ("*.example.com", "api.example.com.evil.io", False),
        ("www.example.org", "www.example.org", True),
        ("www.example.org", "api.www.example.org", False),
    ],
)
def test_istio_wildcards(pattern: str, host: str, matches: bool) -> None:
    assert wildcard_matches(pattern, host) is matches


def test_split_service_fqdn_inverts_service_fqdn() -> None:
    assert split_service_fqdn(service_fqdn("cart", "shop", "corp.local"), "corp.local") == ("cart", "shop")
    for host in ("cart.shop.svc.cluster.local", "cart.shop", "*.shop.svc.corp.local", "a.b.c.svc.corp.local"):
        assert split_service_fqdn(host, "corp.local") is None, host
