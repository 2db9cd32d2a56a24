#!/usr/bin/python3
"""Store commit latency as a client sees it: roster sets at a steady rate.

Usage: commit-probe.py HOST PORT CAFILE DOMAIN USER PASSWORD RATE SECONDS OUT.json

Logs in with python3-slixmpp (STARTTLS), then sends RATE roster sets per second for SECONDS,
open loop: each set has an intended time and its latency runs from that time to its result,
so a server that falls behind cannot hide it. A roster set is answered only once its change is
durable (RFC 6121 §2.1.5 with the server's write-before-acknowledge rule), so this is the
commit path. Writes {"sent", "answered", "errors", "p50_us", "p99_us", "p999_us", "max_us"}.
"""
import asyncio
import json
import logging
import ssl
import sys
import time

import slixmpp


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

    latencies, errors = [], 0
    interval = 1.0 / rate
    start = time.monotonic() + 0.5
    total = int(rate * seconds)
    tasks = []

    async def one(n, due):
        nonlocal errors
        iq = client.Iq()
        iq["type"] = "set"
        iq["roster"].set_items({f"probe-{n % 50}@{domain}": {"name": f"probe {n}", "subscription": "none", "groups": []}})
        try:
            await iq.send(timeout=30)
            latencies.append(int((time.monotonic() - due) * 1e6))
        except Exception:  # noqa: BLE001 - an error answer or a timeout is counted
            errors += 1

    for n in range(total):
        due = start + n * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(n, due)))
    await asyncio.gather(*tasks)
    latencies.sort()
    result = {
        "sent": total,
        "answered": len(latencies),
        "errors": errors,
        "p50_us": quantile(latencies, 0.5),
        "p99_us": quantile(latencies, 0.99),
        "p999_us": quantile(latencies, 0.999),
        "max_us": latencies[-1] if latencies else 0,
    }
    with open(out, "w") as f:
        json.dump(result, f)
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
