"""``fluentbit/``: the parser regex (converted mechanically from the YAML) on real Istio lines, the grep
rules, the Lua key filter under LuaJIT (Fluent Bit's Lua), the Kafka output settings, and the forward
stand-in's decoding of fluent-logger's wire format."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fluent import sender

from lazystream.config import GlobalSidecarSettings
from lazystream.domain.records import ISTIO_TEXT_LINE, AccessRecord, RecordFormat, parse_record
from lazystream.testing import fluent_bit, global_sidecar_record, istio_text_line
from lazystream.testing.fluentbit import caller_key, entries, kafka_value
from lazystream.testing.records import kubernetes_meta
from tests.fixtures.servers import REPO, unavailable

FLUENTBIT = REPO / "fluentbit"
CONFIG = yaml.safe_load((FLUENTBIT / "fluent-bit.yaml").read_text())
CALLERS = yaml.safe_load((FLUENTBIT / "callers.yaml").read_text())

# Real lines. istio.io "Envoy Access Logs" task (httpbin called by curl): the client's outbound line and the
# server's inbound line, whose route field holds %UPSTREAM_CLUSTER%'s alt_stat_name spelling of the caller.
DOCS_OUTBOUND = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" '
    '"curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" '
    "outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 "
    "- default"
)
DOCS_INBOUND = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 3 1 "-" '
    '"curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "127.0.0.1:80" '
    "inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 10.44.1.23:37652 "
    "outbound_.8000_._.httpbin.foo.svc.cluster.local default"
)
# Slime's lazyload tutorial (pre-1.23, %UPSTREAM_CLUSTER%): productpage's sidecar falls back to the gs.
TUTORIAL = (
    '[2021-12-23T06:24:55.527Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 12 12 "-" '
    '"curl/7.52.1" "7b9f5e1c-5d0a-9c6f-a8e4-1d6f0a2b3c4d" "details:9080" "172.17.0.10:80" '
    "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local 172.17.0.11:45194 10.102.66.227:9080 "
    "172.17.0.11:40210 - -"
)
# The global-sidecar's istio-proxy, inbound, 1.23+ (%UPSTREAM_CLUSTER_RAW%): the caller is 10.244.0.15.
GS_INBOUND_123 = (
    '[2024-09-10T08:00:01.250Z] "GET /details/0 HTTP/1.1" 200 - via_upstream - "-" 0 178 5 4 "-" '
    '"curl/8.5.0" "0e1d2c3b-4a59-6877-8695-a4b3c2d1e0f9" "details:9080" "10.244.0.9:80" inbound|80|| '
    "127.0.0.6:41235 10.244.0.9:80 10.244.0.15:51234 "
    "outbound_.80_._.global-sidecar.mesh-operator.svc.cluster.local default"
)
# Pre-1.23 %UPSTREAM_CLUSTER% in its alt_stat_name form for an outbound cluster.
PRE_123_STAT_NAME = istio_text_line(upstream_cluster="outbound_.9080_._.details.default.svc.cluster.local")
TCP = (
    '[2024-09-10T08:00:02.000Z] "- - -" 0 - - - "-" 1024 2048 15 - "-" "-" "-" "-" "10.244.3.7:3306" '
    "outbound|3306||mysql.db.svc.cluster.local 10.244.0.15:50000 10.96.0.30:3306 10.244.0.15:49998 - -"
)
IPV6 = istio_text_line(
    downstream_remote_address="[fd00:10:244::f]:51234", upstream_local_address="[fd00:10:244::f]:45194"
)
ENVOY_OWN_LINE = (
    "2024-09-10T08:00:00.123456Z\twarning\tenvoy config external/envoy/source/extensions/config_subscription"
    "/grpc/grpc_stream.h:153\tStreamAggregatedResources gRPC config stream to xds-grpc closed: 13, "
)
LINES = {
    "docs-outbound": (DOCS_OUTBOUND, "httpbin:8000", "outbound|8000||httpbin.foo.svc.cluster.local",
                      "10.44.1.23:46520"),
    "docs-inbound": (DOCS_INBOUND, "httpbin:8000", "inbound|8000||", "10.44.1.23:37652"),
    "tutorial-pre-1.23": (TUTORIAL, "details:9080",
                          "outbound|9080||global-sidecar.mesh-operator.svc.cluster.local",
                          "172.17.0.11:40210"),
    "gs-inbound-1.23": (GS_INBOUND_123, "details:9080", "inbound|80||", "10.244.0.15:51234"),
    "pre-1.23-stat-name": (PRE_123_STAT_NAME, "details:9080",
                           "outbound_.9080_._.details.default.svc.cluster.local", "10.244.0.15:51234"),
    "tcp": (TCP, None, "outbound|3306||mysql.db.svc.cluster.local", "10.244.0.15:49998"),
    "ipv6": (IPV6, "details:9080", "outbound|9080||details.default.svc.cluster.local",
             "[fd00:10:244::f]:51234"),
}  # fmt: skip


def onigmo_to_python(pattern: str) -> str:
    """Fluent Bit's regex parser is Onigmo: ``(?<name>...)`` is Python's ``(?P<name>...)``."""
    return re.sub(r"\(\?<([A-Za-z_]\w*)>", r"(?P<\1>", pattern)


def parser(name: str) -> dict[str, Any]:
    return next(p for p in CONFIG["parsers"] if p["name"] == name)


ISTIO_ACCESS = re.compile(onigmo_to_python(parser("istio_access")["regex"]))


def filters(config: dict[str, Any], name: str, match: str) -> list[dict[str, Any]]:
    return [f for f in config["pipeline"]["filters"] if f["name"] == name and f.get("match") == match]


def grep_keeps(rule: str, record: dict[str, Any]) -> bool:
    """Fluent Bit's grep ``regex: KEY REGEX``: keep records whose string value of KEY matches."""
    key, pattern = rule.split(" ", 1)
    value = record.get(key)
    return isinstance(value, str) and re.search(onigmo_to_python(pattern), value) is not None


def after_tail(line: str, *, pod: str = "global-sidecar-7d9c-abcde", namespace: str = "mesh-operator",
               labels: dict[str, str] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """A container-log line through the gs.* filters as configured: CRI fields, kubernetes map, the
    istio_access parser (reserve_data, the log key removed on a match), then the grep. None: dropped."""
    record: dict[str, Any] = {"time": "2024-09-10T08:00:01.250712345Z", "stream": "stdout", "_p": "F",
                              "log": line}  # fmt: skip
    record["kubernetes"] = kubernetes_meta(namespace, pod, labels or {"app": "global-sidecar"})
    (parse,) = [f for f in filters(CONFIG, "parser", "gs.*") if f["parser"] == "istio_access"]
    assert parse["key_name"] == "log"
    assert parse["reserve_data"] is True or parse["reserve_data"] == "on"
    match = ISTIO_ACCESS.match(record[parse["key_name"]])
    if match:
        del record["log"]
        record.update(match.groupdict())
    (grep,) = filters(CONFIG, "grep", "gs.*")
    return record if grep_keeps(grep["regex"], record) else None


@pytest.mark.parametrize("name", sorted(LINES))
def test_the_parser_regex_matches_real_istio_lines_as_the_worker_does(name: str) -> None:
    line = LINES[name][0]
    ours = ISTIO_ACCESS.match(line)
    assert ours is not None, name
    theirs = ISTIO_TEXT_LINE.match(line)
    assert theirs is not None
    assert ours.groupdict() == theirs.groupdict()


@pytest.mark.parametrize("name", sorted(LINES))
def test_the_tailed_record_gives_the_worker_what_it_needs(name: str) -> None:
    line, authority, cluster, remote = LINES[name]
    record = after_tail(line)
    assert record is not None
    parsed = parse_record(fluent_bit(record))
    assert isinstance(parsed, AccessRecord)
    assert parsed.format is RecordFormat.FLUENT_BIT
    assert (parsed.authority, parsed.upstream_cluster, parsed.downstream_remote_address) == (
        authority,
        cluster,
        remote,
    )
    assert parsed.pod is not None
    assert parsed.pod.namespace == "mesh-operator"


def test_envoys_own_log_lines_are_dropped() -> None:
    assert ISTIO_ACCESS.match(ENVOY_OWN_LINE) is None
    assert after_tail(ENVOY_OWN_LINE) is None


def test_json_encoded_access_lines_pass_the_grep() -> None:
    (json_parse,) = [f for f in filters(CONFIG, "parser", "gs.*") if f["parser"] == "json_line"]
    assert parser(json_parse["parser"])["format"] == "json"
    (grep,) = filters(CONFIG, "grep", "gs.*")
    record = orjson.loads(orjson.dumps({"upstream_cluster": "inbound|80||", "response_code": 200}))
    assert grep_keeps(grep["regex"], record)


def test_only_the_proxys_records_leave_its_stdout() -> None:
    (grep,) = filters(CONFIG, "grep", "gsapp.*")
    assert grep_keeps(grep["regex"], global_sidecar_record())
    assert not grep_keeps(grep["regex"], {"log": "2025-01-01 INFO lazystream.globalsidecar.app: ready"})


def test_callers_logs_are_parsed_like_the_global_sidecars() -> None:
    (tail,) = CALLERS["pipeline"]["inputs"]
    assert tail["tag"] == "callers.*"
    assert tail["multiline.parser"] == "cri"
    assert "istio-proxy" in tail["path"]
    assert "global-sidecar" in tail["exclude_path"]
    names = [f["name"] for f in CALLERS["pipeline"]["filters"]]
    assert names == ["kubernetes", "parser", "parser", "grep", "lua"]  # the key after parsing
    (kube,) = filters(CALLERS, "kubernetes", "callers.*")
    assert kube["kube_tag_prefix"] == "callers.var.log.containers."
    (output,) = CONFIG["pipeline"]["outputs"]
    assert re.match(output["match_regex"], "callers.var.log.containers.x.log")


def test_the_tail_inputs_use_the_cri_multiline_parser_and_their_tags_match_the_kubernetes_filter() -> None:
    tails = [i for i in CONFIG["pipeline"]["inputs"] if i["name"] == "tail"]
    assert {t["tag"] for t in tails} == {"gs.*", "gsapp.*"}
    for tail in tails:
        assert tail["multiline.parser"] == "cri"
        assert tail["db"]
    (kube,) = filters(CONFIG, "kubernetes", "gs.*")
    assert kube["kube_tag_prefix"] == "gs.var.log.containers."
    assert kube["labels"] in (True, "on")


def test_the_forward_input_takes_the_proxys_records() -> None:
    (forward,) = [i for i in CONFIG["pipeline"]["inputs"] if i["name"] == "forward"]
    settings = GlobalSidecarSettings()
    assert forward["port"] == settings.forward_port
    (output,) = CONFIG["pipeline"]["outputs"]
    (lua,) = [f for f in CONFIG["pipeline"]["filters"] if f["name"] == "lua"]
    for regex in (output["match_regex"], lua["match_regex"]):
        assert re.match(regex, settings.forward_tag)
        assert re.match(regex, "gs.var.log.containers.x.log")
        assert re.match(regex, "gsapp.var.log.containers.x.log")


def test_the_kafka_output() -> None:
    (output,) = CONFIG["pipeline"]["outputs"]
    assert output["name"] == "kafka"
    assert output["format"] == "json"
    assert output["timestamp_key"] == "@timestamp"
    assert output["timestamp_format"] == "double"
    assert output["message_key_field"] == "kafka_key"
    assert output["rdkafka.partitioner"] == "murmur2_random"
    assert str(output["rdkafka.request.required.acks"]) in ("-1", "all")
    assert output["rdkafka.compression.codec"] in ("gzip", "none")  # aiokafka reads these without cramjam
    (lua,) = [f for f in CONFIG["pipeline"]["filters"] if f["name"] == "lua"]
    assert Path(lua["script"]).name == "lazystream.lua"


# --- the Lua key filter, under LuaJIT ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def luajit() -> list[str]:
    path = Path(
        os.environ.get("LAZYSTREAM_TEST_LUAJIT")
        or Path.home() / ".cache" / "lazystream-infra" / "luajit" / "usr" / "bin" / "luajit"
    )
    if not path.exists():
        unavailable(f"LuaJIT ({path}; `scripts/infra/servers.sh install` unpacks it)")
    return [str(path)]


def lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return (
            '"' + "".join(c if c.isalnum() or c in " ./:-_[]|@" else f"\\{ord(c):03d}" for c in value) + '"'
        )
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def run_lua(luajit: list[str], records: list[dict[str, Any]]) -> list[tuple[int, str | None]]:
    binary = Path(luajit[0])
    libs = [str(p.parent) for p in binary.parents[1].glob("lib/*/libluajit-5.1.so.2")]
    env = dict(os.environ, LD_LIBRARY_PATH=":".join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]))
    script = "\n".join(
        [
            f"dofile({lua_literal(str(FLUENTBIT / 'lazystream.lua'))})",
            "local cases = {" + ", ".join(lua_literal(r) for r in records) + "}",
            "for i = 1, #cases do",
            "  local code, ts, out = lazystream_key('t', 1.5, cases[i])",
            "  assert(ts == 1.5)",
            "  io.write(code, '\\t', tostring(out['kafka_key']), '\\n')",
            "end",
        ]
    )
    done = subprocess.run([*luajit, "-"], input=script, capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    out = []
    for line in done.stdout.splitlines():
        code, key = line.split("\t")
        out.append((int(code), None if key == "nil" else key))
    return out


def key_cases() -> list[tuple[dict[str, Any], str | None]]:
    productpage = kubernetes_meta("default", "productpage-v1-7d6cfb7dfd-x2k8p", {"app": "productpage"})
    canonical = kubernetes_meta(
        "shop", "cart-5b6-xyz", {"app": "cart-app", "service.istio.io/canonical-name": "cart"}
    )
    nolabels = kubernetes_meta("shop", "lonely-pod", {})
    gs_pod = kubernetes_meta("mesh-operator", "global-sidecar-0", {"app": "global-sidecar"})
    outbound = "outbound|9080||details.default.svc.cluster.local"
    return [
        ({"upstream_cluster": outbound, "kubernetes": productpage, "downstream_remote_address": "x"},
         "default/productpage"),
        ({"upstream_cluster": outbound, "kubernetes": canonical}, "shop/cart"),
        ({"upstream_cluster": outbound, "kubernetes": nolabels}, "shop/lonely-pod"),
        ({"upstream_cluster": "inbound|80||", "kubernetes": gs_pod,
          "downstream_remote_address": "10.244.0.15:51234"}, "10.244.0.15"),
        ({"upstream_cluster": outbound, "downstream_remote_address": "10.244.0.16:4000"}, "10.244.0.16"),
        (global_sidecar_record(peer_address="10.1.2.3:5555"), "10.1.2.3"),
        (global_sidecar_record(peer_address="[fd00::7]:5555"), "fd00::7"),
        (global_sidecar_record(peer_address="127.0.0.6:5555",
                               peer_principal="spiffe://cluster.local/ns/default/sa/reviews"),
         "spiffe://cluster.local/ns/default/sa/reviews"),
        (global_sidecar_record(peer_address="127.0.0.6:5555", peer_principal=None), None),
        (global_sidecar_record(peer_address="[::1]:5555", peer_principal=""), None),
        ({"downstream_remote_address": "-"}, None),
        ({"downstream_remote_address": "10.0.0.9"}, "10.0.0.9"),
        ({"peer_address": "not:an:address"}, "not:an:address"),
        ({"log": "Envoy's own line"}, None),
        ({"upstream_cluster": outbound, "kubernetes": {"labels": "bad"}, "peer_address": "10.0.0.1:1"},
         "10.0.0.1"),
    ]  # fmt: skip


def test_the_lua_key_filter_under_luajit_and_the_stand_ins_copy_agree(luajit: list[str]) -> None:
    cases = key_cases()
    results = run_lua(luajit, [record for record, _ in cases])
    for (record, expected), (code, key) in zip(cases, results, strict=True):
        assert key == expected, record
        assert code == (0 if expected is None else 2)  # 2: record changed, timestamp kept
        assert caller_key(record) == expected, record


def test_the_lua_key_filter_on_tailed_real_lines(luajit: list[str]) -> None:
    records = [after_tail(line) for line, *_ in LINES.values()]
    results = run_lua(luajit, [r for r in records if r is not None])
    expected = [
        # the pod's own outbound lines are keyed by the pod; inbound ones by the caller's IP
        "mesh-operator/global-sidecar"
        if cluster.startswith("outbound|")
        else remote.rsplit(":", 1)[0].strip("[]")
        for _, _, cluster, remote in LINES.values()
    ]
    assert [key for _, key in results] == expected
    assert [caller_key(r) for r in records if r is not None] == expected


# --- fluent-logger's wire format, as the stand-in reads it -------------------------------------------------


def test_the_stand_in_reads_fluent_loggers_messages() -> None:
    import msgpack

    record = global_sidecar_record(time=1700000000.25)
    for precise in (False, True):
        fluent = sender.FluentSender("lazystream", nanosecond_precision=precise)
        packet = fluent._make_packet("access", 1700000000.25 if precise else 1700000000, record)
        fluent.close()
        tag, items, options = entries(msgpack.unpackb(packet, raw=False, ext_hook=_ext_hook()))
        assert tag == "lazystream.access"
        assert items == [(1700000000.25 if precise else 1700000000.0, record)]
        assert options == {}


def test_the_stand_in_reads_forward_and_packed_forward_modes() -> None:
    import gzip

    import msgpack

    a, b = {"n": 1}, {"n": 2}
    forward = ["tag", [[1, a], [2, b]], {"chunk": "x"}]
    assert entries(forward) == ("tag", [(1.0, a), (2.0, b)], {"chunk": "x"})
    packed = msgpack.packb([1, a]) + msgpack.packb([2, b])
    assert entries(["tag", packed]) == ("tag", [(1.0, a), (2.0, b)], {})
    compressed = ["tag", gzip.compress(packed), {"compressed": "gzip"}]
    assert entries(compressed)[1] == [(1.0, a), (2.0, b)]
    with pytest.raises(ValueError, match="Forward-protocol"):
        entries({"not": "a message"})


def test_kafka_value_is_out_kafkas_json() -> None:
    value = kafka_value(1700000000.25, {"b": 1, "a": None})
    assert value == b'{"@timestamp":1700000000.25,"b":1,"a":null}'
    assert list(orjson.loads(value)) == ["@timestamp", "b", "a"]


def _ext_hook() -> Any:
    from lazystream.testing import fluentbit

    return fluentbit._ext_hook
