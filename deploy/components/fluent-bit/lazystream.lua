-- lazystream's Fluent Bit filter (filter `lua`, LuaJIT): gives each access record a stable Kafka message key.
--
-- Fluent Bit's Kafka output can only key a message by a top-level string field (`message_key_field`), and
-- what identifies the caller is nested (`kubernetes.*`) or carries a port that changes per connection. So
-- this sets `kafka_key` to the caller:
--   * a caller's own sidecar line (an `outbound|...` cluster, with the pod's `kubernetes` map):
--     "<namespace>/<app>", the app being the canonical-service label, else `app`, else the pod name;
--   * a global-sidecar line or record: the caller's IP (`downstream_remote_address` of the istio-proxy's
--     inbound line, `peer_address` of lazystream's records) without the port; when that is loopback (the
--     proxy behind its own sidecar), the caller's certificate principal (`peer_principal`) instead.
-- Records with none of these keep no key (Kafka then spreads them). The worker re-keys by fence anyway;
-- a stable key keeps one caller's records in order on one partition.

local function strip_port(address)
  if type(address) ~= "string" or address == "" or address == "-" then
    return nil
  end
  local v6 = address:match("^%[([^%]]+)%]")
  if v6 ~= nil then
    return v6
  end
  local host, port = address:match("^([^:]+):(%d+)$")
  if host ~= nil then
    return host
  end
  return address
end

local function is_loopback(ip)
  return ip:sub(1, 4) == "127." or ip == "::1"
end

local function caller_app(k)
  local labels = k["labels"]
  if type(labels) ~= "table" then
    labels = {}
  end
  local app = labels["service.istio.io/canonical-name"] or labels["app"] or k["pod_name"]
  local namespace = k["namespace_name"]
  if type(app) == "string" and type(namespace) == "string" then
    return namespace .. "/" .. app
  end
  return nil
end

function lazystream_key(tag, timestamp, record)
  local key = nil
  local k = record["kubernetes"]
  local cluster = record["upstream_cluster"]
  if type(k) == "table" and type(cluster) == "string" and cluster:sub(1, 9) == "outbound|" then
    key = caller_app(k)
  end
  if key == nil then
    local ip = strip_port(record["peer_address"]) or strip_port(record["downstream_remote_address"])
    if ip ~= nil and not is_loopback(ip) then
      key = ip
    elseif type(record["peer_principal"]) == "string" and record["peer_principal"] ~= "" then
      key = record["peer_principal"]
    end
  end
  if key == nil then
    return 0, timestamp, record
  end
  record["kafka_key"] = key
  return 2, timestamp, record
end
