/*
 * The Redis bus's Lua scripts (bus_redis.h).  A script runs whole inside Redis: each
 * step of a claim, a list or a heartbeat sees the same state.
 */
#include "bus_redis.h"

/* ARGV[1] is always "st_proactor:DB:", ARGV[2] (mostly) this node's tag.  "now" is
 * Redis's clock, so the servers' clocks do not matter. */
#define LUA_NOW                                                                     \
    "local t = redis.call('TIME') "                                                 \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "

/* bury(P, d, why, tpl): node d is gone (crashed, or stopping): its names are freed, its
 * list deleted, and each of its users is announced as gone in their room, with the
 * leave notice tpl (redis_wire_leave_template: from the node that buries; kept out of
 * the history).  A node's list lives twice the TTL, so that another node's heartbeat
 * finds it, after its deadline in 'nodes' has passed, to announce its users. */
#define LUA_BURY                                                                        \
    "local function bury(P, d, why, tpl) "                                              \
    "  local node = P .. 'node:' .. d "                                                 \
    "  local h = redis.call('HGETALL', node) "                                          \
    "  for i = 1, #h, 2 do "                                                            \
    "    if redis.call('GET', P .. 'nick:' .. h[i]) == d then "                         \
    "      redis.call('DEL', P .. 'nick:' .. h[i]) end "                                \
    "    local shown, room = string.match(h[i + 1], '^([^\t]*)\t(.*)$') "             \
    "    if shown then redis.call('PUBLISH', P .. 'room:' .. room, "                    \
    "      string.format(tpl, shown, why)) end "                                       \
    "  end "                                                                            \
    "  redis.call('DEL', node) "                                                        \
    "  redis.call('ZREM', P .. 'nodes', d) "                                            \
    "end "

/* ARGV: base, tag, ttl, name ('' for a guest), shown, room, old ('' for none).  Also
 * renews this node's liveness with the name's TTL, so that lists and names of a
 * crashed node expire together. */
const char REDIS_LUA_CLAIM[] =
    LUA_NOW
    "local P, tag, ttl, name, shown = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5] "
    "if name == '' then "
    "  for i = 1, 100 do "
    "    local g = 'guest' .. redis.call('INCR', P .. 'guests') "
    "    if redis.call('SET', P .. 'nick:' .. g, tag, 'NX', 'EX', ttl) then "
    "      name = g shown = g break end "
    "  end "
    "  if name == '' then return '' end "
    "else "
    "  local owner = redis.call('GET', P .. 'nick:' .. name) "
    "  if owner and owner ~= tag then return '' end "
    "  redis.call('SET', P .. 'nick:' .. name, tag, 'EX', ttl) "
    "end "
    "local node = P .. 'node:' .. tag "
    "redis.call('HSET', node, name, shown .. '\t' .. ARGV[6]) "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "local old = ARGV[7] "
    "if old ~= '' and old ~= name then "
    "  redis.call('HDEL', node, old) "
    "  if redis.call('GET', P .. 'nick:' .. old) == tag then "
    "    redis.call('DEL', P .. 'nick:' .. old) end "
    "end "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return shown";

/* ARGV: base, tag, ttl, name, "shown\troom": a local user moved. */
const char REDIS_LUA_MOVE[] =
    "local node = ARGV[1] .. 'node:' .. ARGV[2] "
    "redis.call('HSET', node, ARGV[4], ARGV[5]) "
    "redis.call('EXPIRE', node, 2 * tonumber(ARGV[3])) "
    "return 1";

/* ARGV: base, tag, name. */
const char REDIS_LUA_DROP[] =
    "redis.call('HDEL', ARGV[1] .. 'node:' .. ARGV[2], ARGV[3]) "
    "if redis.call('GET', ARGV[1] .. 'nick:' .. ARGV[3]) == ARGV[2] then "
    "  redis.call('DEL', ARGV[1] .. 'nick:' .. ARGV[3]) end "
    "return 1";

/* ARGV: base, tag, ttl, then name, shown, room for each local user (SYNC: the list
 * is written anew) or how many local users there are and the leave template
 * (HEARTBEAT: the names listed are refreshed, servers past their deadline buried; a
 * list shorter than that, lost in Redis, is answered '', 'resync').
 * Returns the names another server has taken meanwhile (after this one was cut off
 * for longer than the TTL). */
const char REDIS_LUA_SYNC[] =
    LUA_NOW
    "local P, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]) "
    "local node = P .. 'node:' .. tag "
    "local lost = {} "
    "redis.call('DEL', node) "
    "for i = 4, #ARGV, 3 do "
    "  local k = P .. 'nick:' .. ARGV[i] "
    "  local o = redis.call('GET', k) "
    "  if not o or o == tag then "
    "    redis.call('SET', k, tag, 'EX', ttl) "
    "    redis.call('HSET', node, ARGV[i], ARGV[i + 1] .. '\t' .. ARGV[i + 2]) "
    "  else lost[#lost + 1] = ARGV[i + 1] end "
    "end "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return lost";
const char REDIS_LUA_HEARTBEAT[] =
    LUA_NOW LUA_BURY
    "local P, tag, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]) "
    "for _, d in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', now)) do "
    "  if d ~= tag then bury(P, d, 'server lost', ARGV[5]) end "
    "end "
    "local node = P .. 'node:' .. tag "
    "if redis.call('HLEN', node) < tonumber(ARGV[4]) then return {'', 'resync'} end "
    "local lost = {} "
    "for _, f in ipairs(redis.call('HKEYS', node)) do "
    "  local k = P .. 'nick:' .. f "
    "  local o = redis.call('GET', k) "
    "  if not o or o == tag then redis.call('SET', k, tag, 'EX', ttl) "
    "  else "
    "    local v = redis.call('HGET', node, f) "
    "    lost[#lost + 1] = string.match(v, '^[^\t]*') "
    "    redis.call('HDEL', node, f) "
    "  end "
    "end "
    "redis.call('EXPIRE', node, 2 * ttl) "
    "redis.call('ZADD', P .. 'nodes', now + ttl * 1000, tag) "
    "return lost";

/* ARGV: base, room ('' for every room).  "NAME\tROOM" of each user of every live
 * server (a node past its deadline is left to the heartbeats, which announce its
 * users as gone). */
const char REDIS_LUA_LIST[] =
    LUA_NOW
    "local P, room = ARGV[1], ARGV[2] "
    "local out = {} "
    "for _, tag in ipairs(redis.call('ZRANGEBYSCORE', P .. 'nodes', now, '+inf')) do "
    "  for _, v in ipairs(redis.call('HVALS', P .. 'node:' .. tag)) do "
    "    if room == '' or string.sub(v, -#room - 1) == '\t' .. room then "
    "      out[#out + 1] = v end "
    "  end "
    "end "
    "return out";

/* ARGV: base, name, line.  Publishes "name\nline" to the owner's channel; returns
 * the name as its owner shows it, or '' when nobody has it (or its server is gone). */
const char REDIS_LUA_MSG[] =
    "local o = redis.call('GET', ARGV[1] .. 'nick:' .. ARGV[2]) "
    "if not o then return '' end "
    "if redis.call('PUBLISH', ARGV[1] .. 'to:' .. o, ARGV[2] .. '\\n' .. ARGV[3]) == 0 then "
    "  return '' end " /* its server has crashed: the name lasts until the TTL */
    "local v = redis.call('HGET', ARGV[1] .. 'node:' .. o, ARGV[2]) "
    "if v then return string.match(v, '^[^\t]*') end "
    "return ARGV[2]";

/* ARGV: base, tag, leave template.  This server is stopping: its names and list go with it, and its
 * users are announced as gone on the other servers. */
const char REDIS_LUA_LEAVE[] =
    LUA_BURY
    "bury(ARGV[1], ARGV[2], 'server shutting down', ARGV[3]) "
    "return 1";
