#!/usr/bin/env python3
"""A deliberately broken line relay, to check that chatbench detects what it claims to.

Every line a client sends goes to every OTHER client, except that (counting relayed lines
globally, n = 1, 2, ...):
  --drop K     line n with n % K == 0 is not delivered to one receiver (the first other one)
  --dup K      line n with n % K == 0 is delivered twice to every receiver
  --damage K   line n with n % K == 0 has one payload byte changed, for one receiver
  --swap K     line n with n % K == 0 is held back for one receiver and delivered after the
               next line that receiver gets (adjacent swap: a reorder when both lines come
               from the same publisher, an order mismatch between receivers otherwise)
  --xswap K    line n with n % K == 0 is held back for one receiver until a line from a
               DIFFERENT sender arrives for it, which is delivered first (while lines from the
               same sender keep coming, the newest one is held instead): two publishers'
               messages in a different order for that receiver only, no per-publisher reorder
  --echo K     line n with n % K == 0 is also sent back to its sender
Prints the number of each injected fault on SIGTERM/SIGINT (to stderr) and exits.
Usage: broken_relay.py --port 0 [--drop 1000] ...   (prints "PORT n" on stdout)
"""
import argparse
import asyncio
import signal
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=0)
for name in ("drop", "dup", "damage", "swap", "xswap", "echo"):
    ap.add_argument("--" + name, type=int, default=0)
args = ap.parse_args()

clients = []          # list of [writer, held_line or None, xheld (line, sender) or None]
stats = dict(lines=0, drop=0, dup=0, damage=0, swap=0, xswap=0, echo=0)


def hit(k, n):
    return k > 0 and n % k == 0


async def handle(reader, writer):
    me = [writer, None, None]
    clients.append(me)
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            if not line.endswith(b"\n"):
                continue
            stats["lines"] += 1
            n = stats["lines"]
            others = [c for c in clients if c is not me]
            for i, c in enumerate(others):
                out = line
                if i == 0 and hit(args.drop, n):
                    stats["drop"] += 1
                    continue
                if i == 0 and hit(args.damage, n) and len(line) > 50:
                    b = bytearray(line)
                    b[45] = ord("A") if b[45] != ord("A") else ord("B")
                    out = bytes(b)
                    stats["damage"] += 1
                if hit(args.dup, n):
                    out = out + out
                    stats["dup"] += 1
                if i == 0 and hit(args.swap, n) and c[1] is None:
                    c[1] = out
                    stats["swap"] += 1
                    continue
                if c[1] is not None:
                    out = out + c[1]
                    c[1] = None
                if c[2] is not None:
                    held, sender = c[2]
                    if sender is me:          # same sender: release the old, hold the new
                        c[0].write(held)
                        c[2] = (out, me)
                        continue
                    out = out + held          # different sender: new line first
                    c[2] = None
                elif i == 0 and hit(args.xswap, n):
                    c[2] = (out, me)
                    stats["xswap"] += 1
                    continue
                c[0].write(out)
            if hit(args.echo, n):
                writer.write(line)
                stats["echo"] += 1
            for c in others:
                if c[0].transport.get_write_buffer_size() > 1 << 20:
                    await c[0].drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        clients.remove(me)
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", args.port, limit=1 << 20)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set_result, None)
    await stop
    print("broken_relay:", " ".join(f"{k}={v}" for k, v in stats.items()), file=sys.stderr,
          flush=True)


asyncio.run(main())
