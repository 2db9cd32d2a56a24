#!/usr/bin/python3
"""Store commit latency as a client sees it: roster sets at a steady rate.

Usage: commit-probe.py HOST PORT CAFILE DOMAIN USER PASSWORD RATE SECONDS OUT.json

Logs in with python3-slixmpp (STARTTLS), then sends RATE roster sets per second for SECONDS
(0: until SIGTERM, then waits for the answers still due), open loop: each set has an intended time and its latency runs from that time to its result,
so a server that falls behind cannot hide it. A roster set is answered only once its change is
durable (RFC 6121 §2.1.5 with the server's write-before-acknowledge rule), so this is the
commit path. Prints "online" once logged in (a caller may start its load then). Writes
{"sent", "answered", "errors", "p50_us", "p99_us", "p999_us", "max_us", "samples"}, where
samples are [intended send time (Unix seconds), latency in µs, or null for an error answer or
no answer within IQ_TIMEOUT_S] so a caller can cut the run into phases.
"""
import asyncio
import json
import logging
import signal
import ssl
import sys
import time

import slixmpp

IQ_TIMEOUT_S = 60


def quantile(sorted_values, q):
    if not sorted_values:
        return 0
    index = min(len(sorted_values) - 1, int(q * len(sorted_values)))
    return sorted_values[index]


async def main(host, port, cafile, domain, user, password, rate, seconds, out):
    client = slixmpp.ClientXMPP(f"{user}@{domain}/probe", password)
    client.ssl_context = ssl.create_default_context(cafile=cafile)
    online = asyncio.get_event_loop().create_future()
    client.add_event_handler("session_start", lambda _: online.done() or online.set_result(True))
    client.add_event_handler("failed_all_auth", lambda _: online.done() or online.set_exception(RuntimeError("login failed")))
    client.connect((host, int(port)), force_starttls=True, disable_starttls=False)
    await asyncio.wait_for(online, 30)
    print("online", flush=True)

    latencies, errors, samples = [], 0, []
    interval = 1.0 / rate
    start = time.monotonic() + 0.5
    wall = time.time() - time.monotonic()
    total = int(rate * seconds) if seconds > 0 else None
    stop = asyncio.Event()
    asyncio.get_event_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []

    async def one(n, due):
        nonlocal errors
        iq = client.Iq()
        iq["type"] = "set"
        iq["roster"].set_items({f"probe-{n % 50}@{domain}": {"name": f"probe {n}", "subscription": "none", "groups": []}})
        try:
            await iq.send(timeout=IQ_TIMEOUT_S)
            latency = int((time.monotonic() - due) * 1e6)
            latencies.append(latency)
            samples.append([round(wall + due, 3), latency])
        except Exception:  # noqa: BLE001 - an error answer or a timeout is counted
            errors += 1
            samples.append([round(wall + due, 3), None])

    n = 0
    while (total is None or n < total) and not stop.is_set():
        due = start + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
        tasks.append(asyncio.ensure_future(one(n, due)))
        n += 1
    await asyncio.gather(*tasks)
    latencies.sort()
    result = {
        "sent": n,
        "answered": len(latencies),
        "errors": errors,
        "p50_us": quantile(latencies, 0.5),
        "p99_us": quantile(latencies, 0.99),
        "p999_us": quantile(latencies, 0.999),
        "max_us": latencies[-1] if latencies else 0,
        "samples": sorted(samples, key=lambda sample: sample[0]),
    }
    with open(out, "w") as f:
        json.dump(result, f)
    del result["samples"]
    print(json.dumps(result))
    client.disconnect()


if __name__ == "__main__":
    if len(sys.argv) != 10:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    h, p, ca, d, u, pw, r, s, o = sys.argv[1:]
    asyncio.get_event_loop().run_until_complete(main(h, p, ca, d, u, pw, float(r), float(s), o))
