-- rollcall.peers: upstream peers held in an nginx shared dict and pushed by
-- rollcall's renderer, so a membership change needs no reload.
--
-- State is one text in the dict, in the push format (package nginxpush):
--
--     version <n>
--     <app>_<env> <ip:port> <ip:port> ...
--
-- one line per app, every line ending in "\n". It is stored as one value so
-- an update is applied whole or not at all (a full dict refuses it and the
-- last good peers stay). Workers keep a parsed copy and compare the dict's
-- version on every balancer call, so a push is seen by the next request.
local balancer = require "ngx.balancer"

local _M = {}

local conf = { dict = "rollcall_peers", file = nil }

-- A version is exactly representable in a Lua number (etcd revisions are
-- int64; 2^53 is far beyond any real revision).
local MAX_VERSION = 9007199254740991

local function parse_port(s)
    if #s > 5 or not s:find("^[1-9][0-9]*$") then
        return nil
    end
    local n = tonumber(s)
    if n > 65535 then
        return nil
    end
    return n
end

local function valid_ipv4(s)
    local a, b, c, d = s:match("^([0-9]+)%.([0-9]+)%.([0-9]+)%.([0-9]+)$")
    if not a then
        return false
    end
    for _, o in ipairs({ a, b, c, d }) do
        if #o > 3 or (#o > 1 and o:sub(1, 1) == "0") or tonumber(o) > 255 then
            return false
        end
    end
    return true
end

-- groups6 reads an IPv6 address written with lower-case hex groups and at
-- most one "::" into 8 numbers. It is lenient: canonical6 below decides.
local function split6(part, out)
    if part == "" then
        return out
    end
    for h in (part .. ":"):gmatch("([^:]*):") do
        if #h == 0 or #h > 4 then
            return nil
        end
        out[#out + 1] = tonumber(h, 16)
    end
    return out
end

local function groups6(s)
    if s:find("[^0-9a-f:]") then
        return nil -- upper case, dots (embedded IPv4), zones: never canonical
    end
    local i = s:find("::", 1, true)
    if not i then
        local g = split6(s, {})
        if not g or #g ~= 8 then
            return nil
        end
        return g
    end
    local head, tail = s:sub(1, i - 1), s:sub(i + 2)
    if tail:find("::", 1, true) then
        return nil
    end
    local h = split6(head, {})
    local t = split6(tail, {})
    if not h or not t or #h + #t > 7 then
        return nil
    end
    local g = h
    for _ = 1, 8 - #h - #t do
        g[#g + 1] = 0
    end
    for _, v in ipairs(t) do
        g[#g + 1] = v
    end
    return g
end

-- format6 writes 8 groups the way Go's netip does (RFC 5952): the first
-- longest run of two or more zero groups becomes "::".
local function format6(g)
    local bs, be = 0, 0
    local i = 1
    while i <= 8 do
        local j = i
        while j <= 8 and g[j] == 0 do
            j = j + 1
        end
        if j - i >= 2 and j - i > be - bs then
            bs, be = i, j
        end
        i = (j > i) and j or i + 1
    end
    local out = {}
    local k = 1
    while k <= 8 do
        if k == bs then
            out[#out + 1] = "::"
            k = be
            if k > 8 then
                break
            end
        elseif k > 1 then
            out[#out + 1] = ":"
        end
        out[#out + 1] = string.format("%x", g[k])
        k = k + 1
    end
    return table.concat(out)
end

local function valid_ipv6(s)
    local g = groups6(s)
    if not g or format6(g) ~= s then
        return false
    end
    -- IPv4-mapped (::ffff:a.b.c.d) is refused, as registry.ParseAddr does.
    local mapped = g[6] == 0xffff
    for k = 1, 5 do
        mapped = mapped and g[k] == 0
    end
    return not mapped
end

-- parse_addr checks one address with the registry grammar (canonical
-- a.b.c.d:port or [ipv6]:port, port 1-65535) and returns the host as
-- ngx.balancer wants it ("[v6]" keeps its brackets) and the port.
local function parse_addr(s)
    local host, port
    if s:sub(1, 1) == "[" then
        local ip, p = s:match("^%[([^%]]*)%]:([0-9]+)$")
        if not ip or not valid_ipv6(ip) then
            return nil
        end
        host, port = "[" .. ip .. "]", p
    else
        local ip, p = s:match("^([0-9.]+):([0-9]+)$")
        if not ip or not valid_ipv4(ip) then
            return nil
        end
        host, port = ip, p
    end
    local n = parse_port(port)
    if not n then
        return nil
    end
    return host, n
end

local NAME = "[A-Za-z0-9][A-Za-z0-9%.%-]*"
local SERVICE = "^" .. NAME .. "_" .. NAME .. "$"

-- parse reads a whole state text strictly. It returns
-- { version = n, apps = { [name] = { {host, port, addr}, ... } } } or nil and
-- an error naming the line.
local function parse(body)
    if type(body) ~= "string" or body == "" then
        return nil, "empty body"
    end
    if body:sub(-1) ~= "\n" then
        return nil, "body must end with a newline"
    end
    local st = { apps = {}, napps = 0, npeers = 0 }
    local n = 0
    for line in body:gmatch("([^\n]*)\n") do
        n = n + 1
        if n == 1 then
            local v = line:match("^version ([0-9]+)$")
            if not v or (#v > 1 and v:sub(1, 1) == "0") or #v > 16 or tonumber(v) > MAX_VERSION then
                return nil, "line 1: want \"version <n>\", got " .. string.format("%q", line:sub(1, 64))
            end
            st.version = tonumber(v)
        else
            local name, rest = line:match("^([^ ]+)(.*)$")
            if not name or not name:find(SERVICE) then
                return nil, "line " .. n .. ": bad service name " .. string.format("%q", line:sub(1, 64))
            end
            if st.apps[name] then
                return nil, "line " .. n .. ": service " .. name .. " listed twice"
            end
            local peers, seen = {}, {}
            local pos = 1
            while pos <= #rest do
                local addr, nxt = rest:match("^ ([^ ]+)()", pos)
                if not addr then
                    return nil, "line " .. n .. ": want single spaces between addresses"
                end
                local host, port = parse_addr(addr)
                if not host then
                    return nil, "line " .. n .. ": invalid address " .. string.format("%q", addr:sub(1, 64))
                        .. " (want canonical a.b.c.d:port or [ipv6]:port, port 1-65535)"
                end
                if seen[addr] then
                    return nil, "line " .. n .. ": address " .. addr .. " listed twice"
                end
                seen[addr] = true
                peers[#peers + 1] = { host, port, addr }
                pos = nxt
            end
            st.apps[name] = peers
            st.napps = st.napps + 1
            st.npeers = st.npeers + #peers
        end
    end
    if n == 0 then
        return nil, "empty body"
    end
    return st
end
_M.parse = parse

-- load reads a state the dict holds, which parse checked before it was
-- stored: workers re-read it after every push, so this skips the checks.
local function load(body)
    local st = { apps = {} }
    local first = true
    for line in body:gmatch("([^\n]*)\n") do
        if first then
            first = false
        else
            local peers = {}
            local name
            for f in line:gmatch("[^ ]+") do
                if not name then
                    name = f
                else
                    local host, port = f:match("^(.+):([0-9]+)$")
                    peers[#peers + 1] = { host, tonumber(port), f }
                end
            end
            st.apps[name] = peers
        end
    end
    return st
end

local function dict()
    local d = ngx.shared[conf.dict]
    if not d then
        error("rollcall.peers: no lua_shared_dict " .. tostring(conf.dict))
    end
    return d
end

-- held returns the version the dict holds; 0 when it holds none.
local function held(d)
    return d:get("version") or 0
end

-- ensure creates a number key once; later writes of a number rewrite it in
-- place, so they never need memory and never fail.
local function ensure(d, key)
    if d:get(key) ~= nil then
        return true
    end
    local ok, err = d:safe_add(key, 0)
    if not ok and err ~= "exists" then
        return nil, err
    end
    return true
end

-- store writes a parsed, validated state. A dict replacing a value frees the
-- old one before it allocates the new, so a refused safe_set would lose the
-- peers: the state therefore alternates between two keys, and the new one
-- is written to the slot not in use. Only once it is in place do the slot
-- number and then the version switch over (in place). A failure leaves the
-- last good state whole and current.
local function store(d, st, body)
    local ok, err = ensure(d, "version")
    if ok then
        ok, err = ensure(d, "slot")
    end
    if not ok then
        return nil, err
    end
    local nxt = 1 - d:get("slot")
    d:delete("state" .. nxt)
    ok, err = d:safe_set("state" .. nxt, body)
    if not ok then
        return nil, err
    end
    d:set("slot", nxt)
    d:set("version", st.version)
    return true
end

-- init loads the rendered peers file into the dict: call it from
-- init_by_lua_block. opts.dict names the lua_shared_dict, opts.file the
-- peers file the renderer keeps current. A reload keeps the dict, so the
-- file is applied only when it is not older than what the dict holds.
function _M.init(opts)
    conf.dict = opts.dict or conf.dict
    conf.file = opts.file
    local d = dict()
    if not conf.file then
        return
    end
    local f = io.open(conf.file, "rb")
    if not f then
        ngx.log(ngx.NOTICE, "rollcall.peers: no peers file ", conf.file, ": starting with the dict's peers (version ", held(d), ")")
        return
    end
    local body = f:read("*a")
    f:close()
    -- A bad file must not keep nginx from starting (nginx -t does not run
    -- this): it is logged, the dict keeps what it holds, and the renderer,
    -- seeing the version nginx reports, pushes the full state again.
    local st, err = parse(body)
    if not st then
        ngx.log(ngx.ERR, "rollcall.peers: peers file ", conf.file, " refused: ", err,
            "; serving the dict's version ", held(d))
        return
    end
    local cur = held(d)
    if st.version < cur then
        ngx.log(ngx.NOTICE, "rollcall.peers: peers file ", conf.file, " holds version ", st.version,
            ", older than the dict's ", cur, ": kept the dict")
        return
    end
    local ok, serr = store(d, st, body)
    if not ok then
        ngx.log(ngx.ERR, "rollcall.peers: load ", conf.file, " into lua_shared_dict ", conf.dict, ": ", serr,
            "; serving the dict's version ", held(d))
    end
end

-- A peer that refused or failed a connection is skipped for this long
-- while others are usable: nginx's own max_fails=1 fail_timeout=10s, so a
-- crashed instance costs one failed connection per worker, not one per
-- request until its key expires.
local FAIL_TIMEOUT = 10
local down = {} -- per worker: address -> until when it is skipped

-- Per worker: the parsed state and the dict version it was read at, plus a
-- round-robin position per app that survives updates.
local cache = { version = nil, apps = {} }
local rr = {}

local function current()
    local d = dict()
    local v = d:get("version")
    if v ~= cache.version then
        -- The state is never older than the version read just before it:
        -- keying the cache on that version re-reads once more if it is
        -- newer. A state that vanished under a concurrent update is read on
        -- the next request; until then the last one serves.
        local body = d:get("state" .. (d:get("slot") or 0))
        local st = body and load(body)
        if st then
            cache = { version = v, apps = st.apps }
            local now = ngx.now()
            for addr, u in pairs(down) do
                if u <= now then
                    down[addr] = nil
                end
            end
        elseif v == nil or v == 0 then
            cache = { version = v, apps = {} }
        end
    end
    return cache
end

-- pick returns the first peer from start, in round-robin order, that this
-- request has not tried and that is not marked down; else the first not
-- tried; nil when every peer was tried.
local function pick(peers, start, tried, now)
    local n = #peers
    local fallback
    for k = 0, n - 1 do
        local j = (start - 1 + k) % n + 1
        if not tried[j] then
            local u = down[peers[j][3]]
            if not u or u <= now then
                return j
            end
            fallback = fallback or j
        end
    end
    return fallback
end

-- balance picks the peer for upstream `name`: call it from the upstream's
-- balancer_by_lua_block. Round-robin per worker; when nginx retries
-- (proxy_next_upstream) each further try goes to a peer this request has
-- not tried, up to proxy_next_upstream_tries, and a peer whose connection
-- failed is skipped for FAIL_TIMEOUT.
function _M.balance(name)
    local ctx = ngx.ctx
    local peers = ctx.rollcall_peers
    local now = ngx.now()
    local i
    if not peers then
        peers = current().apps[name]
        if not peers or #peers == 0 then
            -- No peer set: nginx falls back to the upstream's placeholder
            -- "server 127.0.0.1:1 down" and answers 502 at once without
            -- connecting anywhere (ngx.exit here would answer 500).
            ngx.log(ngx.ERR, "rollcall.peers: no peers for upstream ", name)
            return
        end
        local start = (rr[name] or 0) % #peers + 1
        rr[name] = start
        ctx.rollcall_peers, ctx.rollcall_tried = peers, {}
        i = pick(peers, start, ctx.rollcall_tried, now)
        if #peers > 1 then
            local ok, err = balancer.set_more_tries(#peers - 1)
            if not ok then
                ngx.log(ngx.ERR, "rollcall.peers: set_more_tries: ", err)
            end
        end
    else
        local last = ctx.rollcall_last
        if balancer.get_last_failure() == "failed" then
            down[peers[last][3]] = now + FAIL_TIMEOUT
        end
        i = pick(peers, last % #peers + 1, ctx.rollcall_tried, now)
        if not i then
            return ngx.exit(502)
        end
    end
    ctx.rollcall_tried[i], ctx.rollcall_last = true, i
    local p = peers[i]
    local ok, err = balancer.set_current_peer(p[1], p[2])
    if not ok then
        ngx.log(ngx.ERR, "rollcall.peers: set peer ", p[3], " for ", name, ": ", err)
        return ngx.exit(502)
    end
end

local function local_caller()
    local a = ngx.var.remote_addr
    return a == "127.0.0.1" or a == "::1" or a == "unix:"
end

local function reply(status, msg)
    ngx.status = status
    ngx.header["Content-Type"] = "text/plain"
    ngx.print(msg)
    return ngx.exit(status)
end

local function update(d)
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then
        if ngx.req.get_body_file() then
            return reply(413, "body larger than client_body_buffer_size: refused, nothing applied\n")
        end
        return reply(400, "empty body: nothing applied\n")
    end
    local st, err = parse(body)
    if not st then
        return reply(400, "refused, nothing applied: " .. err .. "\n")
    end
    -- One update at a time across workers: the version check and the write
    -- must not interleave with another push.
    local got, lerr = d:safe_add("lock", true, 10)
    if not got then
        if lerr == "exists" then
            return reply(409, "another update is being applied: retry\n")
        end
        return reply(507, "lua_shared_dict " .. conf.dict .. ": " .. lerr .. ": nothing applied, holding version " .. held(d) .. "\n")
    end
    local cur = held(d)
    local ok, serr = true, nil
    if st.version > cur then
        ok, serr = store(d, st, body)
    end
    d:delete("lock")
    if not ok then
        ngx.log(ngx.ERR, "rollcall.peers: update to version ", st.version, " refused: ", serr)
        return reply(507, "lua_shared_dict " .. conf.dict .. " " .. serr .. ": version " .. st.version
            .. " refused, holding version " .. cur .. " (make the dict larger)\n")
    end
    if st.version <= cur then
        return reply(200, "version " .. cur .. "\nignored version " .. st.version .. ": not newer\n")
    end
    return reply(200, "version " .. st.version .. "\napplied " .. st.napps .. " services, " .. st.npeers .. " peers\n")
end

-- serve is the update endpoint: call it from content_by_lua_block in a
-- server that only the host can reach. GET answers "version <n>" (with
-- ?full, the whole state); POST or PUT applies a new state.
function _M.serve()
    if not local_caller() then
        return reply(403, "only local callers may read or update peers\n")
    end
    local d = dict()
    local m = ngx.req.get_method()
    if m == "GET" then
        if ngx.var.arg_full then
            return reply(200, d:get("state" .. (d:get("slot") or 0)) or ("version " .. held(d) .. "\n"))
        end
        return reply(200, "version " .. held(d) .. "\n")
    elseif m == "POST" or m == "PUT" then
        return update(d)
    end
    ngx.header["Allow"] = "GET, POST, PUT"
    return reply(405, "method not allowed\n")
end

return _M
