-- rollcall.peers: upstream peers held in an nginx shared dict and pushed by
-- rollcall's renderer, so a membership change needs no reload.
--
-- A push is a full state or a delta, in the push format (package nginxpush):
--
--     version <n>                  a full state: every app, one line each
--     version <n> from <base>      a delta: only the apps that changed
--     <app>_<env> <ip:port> <ip:port> ...
--
-- every line ending in "\n". The dict holds one value per app with peers,
-- so a worker re-parses only the apps that changed, and a delta carries
-- only them:
--
--     version          number: the version held (0: nothing)
--     c:<app>          number: the version the app's peers were written at
--     p:<app>:<ver>    string: the app's peers, "<ip:port> <ip:port> ..."
--     lock             one update at a time
--
-- An update writes every new value under a fresh key first (safe_set: a
-- full dict refuses it whole and the last good peers stay), then switches
-- the apps' numbers and the version (in place), then frees the old values.
-- Workers compare an app's number on every balancer call, so a push is seen
-- by the next request.
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

local function parse_version(v)
    if not v or (#v > 1 and v:sub(1, 1) == "0") or #v > 16 or tonumber(v) > MAX_VERSION then
        return nil
    end
    return tonumber(v)
end

-- parse_head reads "version <n>" or "version <n> from <base>" (base < n).
local function parse_head(line)
    local v, b = line:match("^version ([0-9]+) from ([0-9]+)$")
    if not v then
        v = line:match("^version ([0-9]+)$")
    end
    local version, base = parse_version(v), b and parse_version(b)
    if not version or (b and not base) then
        return nil, "line 1: want \"version <n>\" or \"version <n> from <base>\", got " .. string.format("%q", line:sub(1, 64))
    end
    if base and base >= version then
        return nil, "line 1: delta from " .. base .. " to " .. version .. ": the base must be older"
    end
    return version, base
end

-- parse reads a full state or a delta strictly. It returns
-- { version = n, base = n or nil, apps = { [name] = text } } (text: the
-- app's addresses as sent, "" for none) or nil and an error naming the line.
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
            local v, b = parse_head(line)
            if not v then
                return nil, b
            end
            st.version, st.base = v, b
        else
            local name, rest = line:match("^([^ ]+)(.*)$")
            if not name or not name:find(SERVICE) then
                return nil, "line " .. n .. ": bad service name " .. string.format("%q", line:sub(1, 64))
            end
            if st.apps[name] then
                return nil, "line " .. n .. ": service " .. name .. " listed twice"
            end
            local seen, count = {}, 0
            local pos = 1
            while pos <= #rest do
                local addr, nxt = rest:match("^ ([^ ]+)()", pos)
                if not addr then
                    return nil, "line " .. n .. ": want single spaces between addresses"
                end
                if not parse_addr(addr) then
                    return nil, "line " .. n .. ": invalid address " .. string.format("%q", addr:sub(1, 64))
                        .. " (want canonical a.b.c.d:port or [ipv6]:port, port 1-65535)"
                end
                if seen[addr] then
                    return nil, "line " .. n .. ": address " .. addr .. " listed twice"
                end
                seen[addr] = true
                count = count + 1
                pos = nxt
            end
            st.apps[name] = rest:sub(2)
            st.napps = st.napps + 1
            st.npeers = st.npeers + count
        end
    end
    if n == 0 then
        return nil, "empty body"
    end
    return st
end
_M.parse = parse

-- load reads an app's peers as the dict holds them, which parse checked
-- before they were stored: workers re-read them after every change of the
-- app, so this skips the checks.
local function load(text)
    local peers = {}
    for f in text:gmatch("[^ ]+") do
        local host, port = f:match("^(.+):([0-9]+)$")
        peers[#peers + 1] = { host, tonumber(port), f }
    end
    return peers
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

local function app_key(name)
    return "c:" .. name
end

local function peers_key(name, v)
    return "p:" .. name .. ":" .. v
end

-- held_apps lists the apps the dict holds peers for.
local function held_apps(d)
    local names = {}
    for _, k in ipairs(d:get_keys(0)) do
        local name = k:match("^c:(.+)$")
        if name then
            names[#names + 1] = name
        end
    end
    return names
end

-- changes returns what st changes, app -> new text ("" = no peers): a
-- delta its apps, a full state its apps and every app held it leaves out.
local function changes(d, st)
    local ch = {}
    for name, text in pairs(st.apps) do
        ch[name] = text
    end
    if not st.base then
        for _, name in ipairs(held_apps(d)) do
            ch[name] = ch[name] or ""
        end
    end
    return ch
end

-- write is the first half of store: every new value under a fresh key
-- (versions only increase, so no reader uses it yet), and a number key for
-- every app that gains peers (0: none yet). Nothing written is in use, so on
-- failure it is removed and the dict is as before.
local function write(d, ch, v)
    local added = {}
    local function undo(err)
        for _, k in ipairs(added) do
            d:delete(k)
        end
        return nil, err
    end
    for name, text in pairs(ch) do
        if text ~= "" then
            local k = peers_key(name, v)
            local ok, err = d:safe_set(k, text)
            if not ok then
                return undo(err)
            end
            added[#added + 1] = k
            if d:get(app_key(name)) == nil then
                ok, err = d:safe_add(app_key(name), 0)
                if not ok then
                    return undo(err)
                end
                added[#added + 1] = app_key(name)
            end
        end
    end
    return true
end

-- store applies a parsed, validated state or delta at st.version. A dict
-- replacing a value frees the old one before it allocates the new, so a
-- refused write would lose peers: new values go under fresh keys first
-- (write), and only once all are in place do the apps' numbers and then
-- the version switch over (numbers, rewritten in place: they never need
-- memory), after which the old values are freed. A failure leaves the
-- last good state whole and current. st.version must be newer than the
-- version held: the fresh keys are named with it.
local function store(d, st)
    local v = st.version
    local cur = d:get("version")
    if cur and v <= cur then
        return nil, "version " .. v .. " is not newer than the " .. cur .. " held"
    end
    local ok, err = ensure(d, "version")
    if not ok then
        return nil, err
    end
    local ch = changes(d, st)
    ok, err = write(d, ch, v)
    if not ok then
        return nil, err
    end
    local old = {}
    for name, text in pairs(ch) do
        local k = app_key(name)
        old[name] = d:get(k)
        if text ~= "" then
            d:set(k, v)
        else
            d:delete(k)
        end
    end
    d:set("version", v)
    for name, o in pairs(old) do
        if o and o ~= 0 then
            d:delete(peers_key(name, o))
        end
    end
    return true
end

-- init loads the rendered peers file into the dict: call it from
-- init_by_lua_block. opts.dict names the lua_shared_dict, opts.file the
-- peers file the renderer keeps current. A reload keeps the dict, so the
-- file is applied only when it is newer than what the dict holds.
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
    if st.base then
        ngx.log(ngx.ERR, "rollcall.peers: peers file ", conf.file, " refused: a delta, not a full state",
            "; serving the dict's version ", held(d))
        return
    end
    -- The dict at the file's version holds the same peers already (a
    -- reload right after the renderer wrote and pushed it).
    local cur = d:get("version")
    if cur and st.version <= cur then
        ngx.log(ngx.NOTICE, "rollcall.peers: peers file ", conf.file, " holds version ", st.version,
            ", not newer than the dict's ", cur, ": kept the dict")
        return
    end
    local ok, serr = store(d, st)
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

-- Per worker: each app's parsed peers and the version they were written
-- at, plus a round-robin position per app that survives updates.
local cache = {}
local keys = {} -- app -> its number key, built once
local rr = {}

local function prune_down()
    local now = ngx.now()
    for addr, u in pairs(down) do
        if u <= now then
            down[addr] = nil
        end
    end
end

-- peers_of returns the app's peers (nil: none), re-parsed only when the
-- app's number changed. Its value vanishing under a concurrent update (the
-- number moved on and the old value was freed) means the number is read
-- again; should that keep happening, the last parsed peers serve this
-- request and the next one reads again.
local function peers_of(name)
    local d = dict()
    local k = keys[name]
    if not k then
        k = app_key(name)
        keys[name] = k
    end
    for _ = 1, 3 do
        local v = d:get(k)
        if not v or v == 0 then
            return nil
        end
        local c = cache[name]
        if c and c.version == v then
            return c.peers
        end
        local text = d:get(peers_key(name, v))
        if text then
            local peers = load(text)
            cache[name] = { version = v, peers = peers }
            prune_down()
            return peers
        end
    end
    local c = cache[name]
    return c and c.peers
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
        peers = peers_of(name)
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
    local stale = st.version <= cur
    if not stale and st.base and st.base ~= cur then
        d:delete("lock")
        return reply(412, "holding version " .. cur .. ", not " .. st.base
            .. ": delta to version " .. st.version .. " refused, nothing applied: send the full state\n")
    end
    if not stale then
        local perr
        perr, ok, serr = pcall(store, d, st)
        if not perr then
            ok, serr = nil, ok -- a Lua error: report it, and release the lock
        end
    end
    d:delete("lock")
    if not ok then
        ngx.log(ngx.ERR, "rollcall.peers: update to version ", st.version, " refused: ", serr)
        return reply(507, "lua_shared_dict " .. conf.dict .. " " .. tostring(serr) .. ": version " .. st.version
            .. " refused, holding version " .. cur .. " (make the dict larger)\n")
    end
    if stale then
        return reply(200, "version " .. cur .. "\nignored version " .. st.version .. ": not newer\n")
    end
    local what = st.base and (" changed from version " .. st.base) or ""
    return reply(200, "version " .. st.version .. "\napplied " .. st.napps .. " services" .. what .. ", " .. st.npeers .. " peers\n")
end

-- full_state writes the whole state the dict holds, in the push format
-- (apps with peers only), read under the update lock so no update mixes in.
local function full_state(d)
    for _ = 1, 1000 do
        local got, err = d:safe_add("lock", true, 10)
        if got then
            local names = held_apps(d)
            table.sort(names)
            local out = { "version " .. held(d) .. "\n" }
            for _, name in ipairs(names) do
                local v = d:get(app_key(name))
                local text = v and v ~= 0 and d:get(peers_key(name, v))
                if text then
                    out[#out + 1] = name .. " " .. text .. "\n"
                end
            end
            d:delete("lock")
            return table.concat(out)
        elseif err ~= "exists" then
            return nil, err
        end
        ngx.sleep(0.002)
    end
    return nil, "another update is being applied"
end

-- serve is the update endpoint: call it from content_by_lua_block in a
-- server that only the host can reach. GET answers "version <n>" (with
-- ?full, the whole state); POST or PUT applies a full state or a delta.
function _M.serve()
    if not local_caller() then
        return reply(403, "only local callers may read or update peers\n")
    end
    local d = dict()
    local m = ngx.req.get_method()
    if m == "GET" then
        if ngx.var.arg_full then
            local body, err = full_state(d)
            if not body then
                return reply(409, "full state: " .. err .. ": retry\n")
            end
            return reply(200, body)
        end
        return reply(200, "version " .. held(d) .. "\n")
    elseif m == "POST" or m == "PUT" then
        return update(d)
    end
    ngx.header["Allow"] = "GET, POST, PUT"
    return reply(405, "method not allowed\n")
end

return _M
