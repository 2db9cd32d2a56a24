#!/usr/bin/python3
"""Instant-messaging scenario with real slixmpp clients against Confab.

Usage: slixmpp_im.py HOST PORT CAFILE DOMAIN ALICE PASS BOB PASS CAROL PASS

Clients: alice/one, alice/two, bob/main, carol/phone (logs in late) and bob/sm (stream
management). The checks run in order, each printing "ok: NAME" or "FAIL: NAME - why":

  login            alice/one, alice/two and bob/main log in (STARTTLS, SCRAM-SHA-256)
  roster           RFC 6121 §3: alice adds bob and subscribes, bob's client approves; alice
                   gets bob's available presence; the server's rosters say to/both, from/both
  roster-mutual    bob's client subscribes back: both rosters say both, alice/two gets
                   bob's presence too and bob gets alice's
  carbons-received XEP-0280: bob -> alice/one arrives there and as a received carbon on alice/two
  carbons-sent     alice/one -> bob arrives and alice/two gets a sent carbon
  offline-delay    XEP-0160/0203: bob -> offline carol is delivered at her login with a delay stamp
  mam              XEP-0313: alice's archive with bob holds both carbons-test bodies
  mam-rsm          the same query paged with RSM max=1 and after=last
  blocking         XEP-0191: carol blocks bob; bob's message bounces with service-unavailable
                   and carol receives nothing for 2 s
  blocking-presence XEP-0191 §3.3: bob, who has no subscription to carol's presence and got no
                   directed presence from her, receives no presence from her when blocked
  unblock          carol unblocks bob; bob's next message reaches her
  sm-resume        XEP-0198: bob/sm enables resumable SM, its TCP connection is aborted,
                   alice sends to bob/sm, the client resumes with previd; the message
                   arrives after <resumed/>, exactly once

Exits 0 only when every check passed (all within 60 s). With SLIX_DEBUG=1 in the environment
every stanza each client sends and receives is traced on stderr, prefixed with its JID.
Run with Debian's /usr/bin/python3 (python3-slixmpp).
"""
import asyncio
import logging
import os
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

OVERALL_TIMEOUT_S = 60
STEP_TIMEOUT_S = 8
CHECKS = [
    "login", "roster", "roster-mutual", "carbons-received", "carbons-sent", "offline-delay",
    "mam", "mam-rsm", "blocking", "blocking-presence", "unblock", "sm-resume",
]
CARBONS = "urn:xmpp:carbons:2"
DELAY = "urn:xmpp:delay"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class CheckFailed(Exception):
    pass


def expect(condition, why):
    if not condition:
        raise CheckFailed(why)


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records every message and presence it receives."""

    def __init__(self, jid, password, cafile, plugins=()):
        # No sasl_mech: slixmpp negotiates as it does for its users (SCRAM-*-PLUS first).
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        for plugin in ("xep_0030", "xep_0203", *plugins):
            self.register_plugin(plugin)
        self.inbox = []
        self.wake = asyncio.Event()
        self.online = asyncio.get_event_loop().create_future()
        self.events = {}
        if os.environ.get("SLIX_DEBUG"):
            self.add_filter("in", lambda s: self.trace("RECV", s))
            self.add_filter("out", lambda s: self.trace("SEND", s))
        self.register_handler(Callback("record message", MatchXPath("{jabber:client}message"), self.record))
        self.register_handler(Callback("record presence", MatchXPath("{jabber:client}presence"), self.record))
        self.add_event_handler("session_start", self.on_start)
        # failed_auth fires for each mechanism slixmpp gives up on; only running out of them fails.
        self.add_event_handler("failed_all_auth", lambda *_: self.fail("authentication failed"))
        for name in ("sm_enabled", "sm_failed", "session_resumed", "disconnected"):
            self.add_event_handler(name, lambda stanza, name=name: self.note(name, stanza))

    def trace(self, direction, stanza):
        print(f"{self.boundjid} {direction}: {show(stanza)}", file=sys.stderr, flush=True)
        return stanza

    def fail(self, why):
        if not self.online.done():
            self.online.set_exception(RuntimeError(f"{self.boundjid}: {why}"))

    def note(self, name, stanza):
        self.events.setdefault(name, []).append(stanza)
        self.wake.set()

    def record(self, stanza):
        self.inbox.append(stanza)
        self.wake.set()

    async def on_start(self, _event):
        try:
            await self.get_roster()
        except Exception as error:  # noqa: BLE001 - the login check reports it
            self.fail(f"roster get: {error!r}")
            return
        self.send_presence()
        if not self.online.done():
            self.online.set_result(True)

    def start(self, host, port):
        # STARTTLS on the c2s port (not direct TLS).
        self.connect((host, int(port)), force_starttls=True, disable_starttls=False)

    def mark(self):
        return len(self.inbox)

    async def wait_for(self, predicate, timeout=STEP_TIMEOUT_S, since=0):
        """The first recorded stanza from index `since` on that satisfies `predicate`, or None."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while True:
            for stanza in self.inbox[since:]:
                if predicate(stanza):
                    return stanza
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_event(self, names, timeout=STEP_TIMEOUT_S):
        """The first of the named events to have fired (name, stanza), or None."""
        loop = asyncio.get_event_loop()
        deadline = loop.time() + timeout
        while True:
            for name in names:
                if self.events.get(name):
                    return name, self.events[name][0]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def roster_on_server(self):
        """{bare JID: subscription} from a fresh roster get (not slixmpp's local cache)."""
        # No roster version: RFC 6121 §2.6.3 lets the server answer a versioned get with an
        # empty result when nothing changed since that version.
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        result = await iq.send(timeout=STEP_TIMEOUT_S)
        return {str(jid): item["subscription"] for jid, item in result["roster"]["items"].items()}


def is_message(stanza):
    return stanza.xml.tag == "{jabber:client}message"


def is_presence(stanza):
    return stanza.xml.tag == "{jabber:client}presence"


def body(stanza):
    """The top-level body of a message (None for carbons, presence and the like)."""
    element = stanza.xml.find("{jabber:client}body")
    return element.text if element is not None else None


def chat_with(text):
    return lambda s: is_message(s) and s["type"] != "error" and body(s) == text


def carbon(stanza, kind):
    """Bodies of the message forwarded in a <received/> or <sent/> carbon, else None."""
    if not is_message(stanza):
        return None
    wrapper = stanza.xml.find(f"{{{CARBONS}}}{kind}")
    if wrapper is None:
        return None
    return [e.text for e in wrapper.iter() if e.tag.endswith("}body")]


def available_from(bare):
    return lambda s: is_presence(s) and s["from"].bare == bare and s["type"] in ("available", "chat", "away", "xa", "dnd")


def show(stanza):
    return str(stanza).replace("\n", "")


def describe(error):
    """repr of an exception, which for slixmpp's IqTimeout can itself raise."""
    try:
        return repr(error)
    except Exception:  # noqa: BLE001 - a stanza that does not serialize
        return type(error).__name__


class Checks:
    """What every scenario beside this file shares: its clients, and running and reporting
    its checks one "ok: NAME" / "FAIL: NAME - why" line each."""

    def __init__(self, host, port, cafile, domain):
        self.host, self.port, self.cafile, self.domain = host, port, cafile, domain
        self.clients = []
        self.reported = []
        self.failed = set()
        self.passed = 0

    def report(self, name, ok, detail=""):
        self.reported.append(name)
        self.passed += ok
        if not ok:
            self.failed.add(name)
        suffix = f" - {detail}" if detail else ""
        print(f"{'ok' if ok else 'FAIL'}: {name}{suffix}", flush=True)

    async def check(self, name, step, timeout=20):
        try:
            detail = await asyncio.wait_for(step(), timeout)
            self.report(name, True, detail or "")
        except CheckFailed as error:
            self.report(name, False, str(error))
        except IqError as error:
            self.report(name, False, f"error answer: {show(error.iq)}")
        except asyncio.TimeoutError:
            self.report(name, False, f"timed out after {timeout} s")
        except Exception as error:  # noqa: BLE001 - any failure of a step is that check's failure
            self.report(name, False, describe(error))

    async def close(self):
        await close_clients(self.clients)


class Scenario(Checks):
    def __init__(self, host, port, cafile, domain, alice, alice_pw, bob, bob_pw, carol, carol_pw):
        super().__init__(host, port, cafile, domain)
        self.alice, self.bob, self.carol = (f"{u}@{domain}" for u in (alice, bob, carol))
        self.passwords = {self.alice: alice_pw, self.bob: bob_pw, self.carol: carol_pw}

    def client(self, full_jid, plugins=()):
        bare = full_jid.split("/")[0]
        client = Client(full_jid, self.passwords[bare], self.cafile, plugins)
        self.clients.append(client)
        return client

    async def run(self):
        self.one = self.client(f"{self.alice}/one", ("xep_0280", "xep_0313", "xep_0059"))
        self.two = self.client(f"{self.alice}/two", ("xep_0280",))
        self.bobc = self.client(f"{self.bob}/main")
        await self.check("login", self.login)
        if self.passed == 0:
            return
        await self.check("roster", self.roster)
        await self.check("roster-mutual", self.roster_mutual)
        await self.check("carbons-received", self.carbons_received)
        await self.check("carbons-sent", self.carbons_sent)
        await self.check("offline-delay", self.offline_delay)
        await self.check("mam", self.mam)
        await self.check("mam-rsm", self.mam_rsm)
        await self.check("blocking", self.blocking)
        await self.check("blocking-presence", self.blocking_presence)
        await self.check("unblock", self.unblock)
        await self.check("sm-resume", self.sm_resume, timeout=30)

    async def login(self):
        for client in (self.one, self.two, self.bobc):
            client.auto_authorize = True
            client.auto_subscribe = True
            client.start(self.host, self.port)
        await asyncio.gather(*(c.online for c in (self.one, self.two, self.bobc)))

    async def roster(self):
        since = self.one.mark()
        await self.one.update_roster(self.bob, name="Bob")
        self.one.send_presence_subscription(pto=self.bob)
        presence = await self.one.wait_for(available_from(self.bob), since=since)
        expect(presence is not None, "alice/one got no available presence from bob after bob approved")
        bob_roster = await self.bobc.roster_on_server()
        expect(bob_roster.get(self.alice) in ("from", "both"), f"bob's roster on the server: {bob_roster}")
        alice_roster = await self.one.roster_on_server()
        expect(alice_roster.get(self.bob) in ("to", "both"), f"alice's roster on the server: {alice_roster}")
        return f"alice got {presence['from']}; bob has alice {bob_roster[self.alice]}, alice has bob {alice_roster[self.bob]}"

    async def roster_mutual(self):
        # bob's client (auto_subscribe) asked back and alice's client (auto_authorize) approved.
        got = await self.bobc.wait_for(available_from(self.alice))
        expect(got is not None, "bob got no available presence from alice after the mutual subscription")
        two = await self.two.wait_for(available_from(self.bob))
        expect(two is not None, "alice/two got no available presence from bob")
        loop = asyncio.get_event_loop()
        deadline = loop.time() + STEP_TIMEOUT_S
        while True:
            bob_roster = await self.bobc.roster_on_server()
            alice_roster = await self.one.roster_on_server()
            if bob_roster.get(self.alice) == "both" and alice_roster.get(self.bob) == "both":
                return "both rosters say both"
            expect(loop.time() < deadline, f"bob's roster {bob_roster}, alice's roster {alice_roster}")
            await asyncio.sleep(0.2)

    async def carbons_received(self):
        await asyncio.gather(self.one["xep_0280"].enable(), self.two["xep_0280"].enable())
        text = "c1 bob to alice/one"
        since_one, since_two = self.one.mark(), self.two.mark()
        self.bobc.send_message(mto=f"{self.alice}/one", mbody=text, mtype="chat")
        direct = await self.one.wait_for(chat_with(text), since=since_one)
        expect(direct is not None, "alice/one did not get bob's message")
        copy = await self.two.wait_for(lambda s: carbon(s, "received") == [text], since=since_two)
        expect(copy is not None, "alice/two got no <received/> carbon; it got: "
               + "; ".join(show(s) for s in self.two.inbox[since_two:] if is_message(s)))
        expect(copy["from"] == slixmpp.JID(self.alice), f"carbon from {copy['from']}, not alice's bare JID")
        return None

    async def carbons_sent(self):
        text = "c2 alice/one to bob"
        since_bob, since_two = self.bobc.mark(), self.two.mark()
        self.one.send_message(mto=self.bob, mbody=text, mtype="chat")
        got = await self.bobc.wait_for(chat_with(text), since=since_bob)
        expect(got is not None, "bob did not get alice's message")
        copy = await self.two.wait_for(lambda s: carbon(s, "sent") == [text], since=since_two)
        expect(copy is not None, "alice/two got no <sent/> carbon; it got: "
               + "; ".join(show(s) for s in self.two.inbox[since_two:] if is_message(s)))
        expect(copy["from"] == slixmpp.JID(self.alice), f"carbon from {copy['from']}, not alice's bare JID")
        return None

    async def offline_delay(self):
        text = "o1 bob to offline carol"
        self.bobc.send_message(mto=self.carol, mbody=text, mtype="chat")
        await asyncio.sleep(1.0)
        self.carolc = self.client(f"{self.carol}/phone", ("xep_0191",))
        self.carolc.start(self.host, self.port)
        await asyncio.wait_for(self.carolc.online, STEP_TIMEOUT_S)
        got = await self.carolc.wait_for(chat_with(text))
        expect(got is not None, "carol got no offline message at login")
        delay = got.xml.find(f"{{{DELAY}}}delay")
        expect(delay is not None and delay.get("stamp"), f"no urn:xmpp:delay stamp: {show(got)}")
        expect(got["delay"]["stamp"] is not None, f"xep_0203 could not parse the stamp: {show(got)}")
        expect(got["from"].bare == self.bob, f"offline message from {got['from']}")
        return f"stamp {delay.get('stamp')}"

    async def mam(self):
        result = await self.one["xep_0313"].retrieve(with_jid=slixmpp.JID(self.bob), timeout=STEP_TIMEOUT_S)
        bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in result["mam"]["results"]]
        for text in ("c1 bob to alice/one", "c2 alice/one to bob"):
            expect(text in bodies, f"{text!r} missing from alice's archive with bob: {bodies}")
        self.archive = bodies
        return f"{len(bodies)} messages"

    async def mam_rsm(self):
        mam = self.one["xep_0313"]
        first = await mam.retrieve(with_jid=slixmpp.JID(self.bob), rsm={"max": 1}, timeout=STEP_TIMEOUT_S)
        page1 = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in first["mam"]["results"]]
        fin = first.xml.find("{urn:xmpp:mam:2}fin")
        expect(fin is not None, f"no <fin/>: {show(first)}")
        last = first["mam_fin"]["rsm"]["last"]
        expect(len(page1) == 1 and last, f"page 1 with max=1: {page1}, last={last!r}")
        expect(fin.get("complete") not in ("true", "1"), f"page 1 of {len(self.archive)} says complete")
        second = await mam.retrieve(with_jid=slixmpp.JID(self.bob), rsm={"max": 1, "after": last}, timeout=STEP_TIMEOUT_S)
        page2 = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in second["mam"]["results"]]
        expect(page1 + page2 == self.archive[:2], f"pages {page1} + {page2}, whole archive {self.archive}")
        return None

    async def blocking(self):
        self.since_block = self.bobc.mark()
        await self.carolc["xep_0191"].block(slixmpp.JID(self.bob), timeout=STEP_TIMEOUT_S)
        blocked = await self.carolc["xep_0191"].get_blocked(timeout=STEP_TIMEOUT_S)
        listed = [str(j) for j in blocked["blocklist"]["items"]]
        expect(self.bob in listed, f"blocklist after block: {listed}")
        text = "b1 bob to carol while blocked"
        since_bob, since_carol = self.bobc.mark(), self.carolc.mark()
        self.bobc.send_message(mto=self.carol, mbody=text, mtype="chat")
        bounce = await self.bobc.wait_for(
            lambda s: is_message(s) and s["type"] == "error" and s["from"].bare == self.carol, since=since_bob)
        await asyncio.sleep(2.0)
        leaked = [show(s) for s in self.carolc.inbox[since_carol:] if is_message(s) and body(s) == text]
        expect(not leaked, f"carol received the blocked message: {leaked}")
        expect(bounce is not None, "bob got no error message back")
        condition = bounce.xml.find(f"{{jabber:client}}error/{{{STANZAS}}}service-unavailable")
        expect(condition is not None, f"bounce is not service-unavailable: {show(bounce)}")
        return None

    async def blocking_presence(self):
        # The blocking check waited 2 s after the block, so a presence would have arrived.
        leaked = [show(s) for s in self.bobc.inbox[self.since_block:] if is_presence(s) and s["from"].bare == self.carol]
        expect(not leaked, f"bob got presence from carol: {leaked}")
        return None

    async def unblock(self):
        await self.carolc["xep_0191"].unblock(slixmpp.JID(self.bob), timeout=STEP_TIMEOUT_S)
        text = "b2 bob to carol after unblock"
        since = self.carolc.mark()
        self.bobc.send_message(mto=self.carol, mbody=text, mtype="chat")
        got = await self.carolc.wait_for(chat_with(text), since=since)
        expect(got is not None, "carol did not get bob's message after unblocking")
        return None

    async def sm_resume(self):
        sm = self.client(f"{self.bob}/sm", ("xep_0198",))
        sm.start(self.host, self.port)
        await asyncio.wait_for(sm.online, STEP_TIMEOUT_S)
        enabled = await sm.wait_event(["sm_enabled", "sm_failed"])
        expect(enabled is not None and enabled[0] == "sm_enabled", f"SM not enabled: {enabled}")
        previd = sm["xep_0198"].sm_id
        expect(previd and enabled[1].xml.get("resume") in ("true", "1"), f"<enabled/> not resumable: {show(enabled[1])}")
        # Let the initial presence exchange finish so the drop interrupts an idle stream.
        settled = await sm.wait_for(available_from(self.alice))
        expect(settled is not None, "bob/sm got no presence from alice before the drop")
        await asyncio.sleep(0.5)
        # Abrupt drop: no </stream>, no TLS close_notify.
        sm.transport.abort()
        dropped = await sm.wait_event(["disconnected"])
        expect(dropped is not None, "slixmpp did not notice the abort")
        await asyncio.sleep(1.0)
        text = "s1 alice to bob/sm while dropped"
        since_main = self.bobc.mark()
        self.one.send_message(mto=f"{self.bob}/sm", mbody=text, mtype="chat")
        await asyncio.sleep(0.5)
        since = sm.mark()
        sm.start(self.host, self.port)  # xep_0198 sends <resume previd=.. h=..> before bind
        outcome = await sm.wait_event(["session_resumed", "sm_failed"])
        expect(outcome is not None, "no <resumed/> nor <failed/> after reconnecting")
        expect(outcome[0] == "session_resumed", f"resumption failed: {show(outcome[1])}")
        got = await sm.wait_for(chat_with(text), since=since)
        expect(got is not None, "message sent while dropped did not arrive after resumption; got: "
               + "; ".join(show(s) for s in sm.inbox[since:]))
        await asyncio.sleep(2.0)
        copies = [s for s in sm.inbox if chat_with(text)(s)]
        expect(len(copies) == 1, f"arrived {len(copies)} times")
        elsewhere = [show(s) for s in self.bobc.inbox[since_main:] if chat_with(text)(s)]
        expect(not elsewhere, f"also delivered to bob/main: {elsewhere}")
        return f"previd {previd}"

async def close_clients(clients):
    """Disconnects every client still connected, waiting a little for each."""
    waits = [client.disconnect(wait=1.0) for client in clients if client.transport]
    if waits:
        await asyncio.wait(waits, timeout=3)


async def run_checks(scenario, checks, overall_timeout_s):
    """Runs a scenario within its time, reports checks that never ran, and returns the exit
    status: 0 only when every check passed (shared by the scenarios beside this file)."""
    try:
        await asyncio.wait_for(scenario.run(), overall_timeout_s)
    except asyncio.TimeoutError:
        pass
    for name in checks:
        if name not in scenario.reported:
            scenario.report(name, False, "not run (earlier failure or overall timeout)")
    await scenario.close()
    if scenario.passed == len(checks):
        print(f"ok: all {len(checks)} checks passed", flush=True)
        return 0
    print(f"FAIL: {len(checks) - scenario.passed} of {len(checks)} checks failed", flush=True)
    return 1


def script_main(scenario_class, checks, overall_timeout_s, doc):
    """The command line of a scenario script: ten arguments (HOST PORT CAFILE DOMAIN and three
    accounts with their passwords), quiet logs, the exit status of `run_checks`."""
    if len(sys.argv) != 11:
        print(doc.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.ERROR)
    # Unfinished slixmpp tasks at exit are noise, not failures.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # slixmpp 1.8 empties its unacked queue when it sends <resume/>, then logs the server's
    # (correct) h in <resumed/> as "inconsistent sequence numbers".
    logging.getLogger("slixmpp.plugins.xep_0198.stream_management").setLevel(logging.CRITICAL)
    scenario = scenario_class(*sys.argv[1:])
    sys.exit(asyncio.get_event_loop().run_until_complete(run_checks(scenario, checks, overall_timeout_s)))


if __name__ == "__main__":
    script_main(Scenario, CHECKS, OVERALL_TIMEOUT_S, __doc__)
