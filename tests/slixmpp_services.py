#!/usr/bin/python3
"""Account and personal-data services with real slixmpp clients against Confab.

Usage: slixmpp_services.py HOST PORT CAFILE DOMAIN ALICE PASS BOB PASS NEWUSER PASS

ALICE and BOB exist already; NEWUSER must not (it registers in band). Clients: the new
user's (registering, then logging in again), alice/one, bob/pep (xep_0172 and xep_0084 add
+notify features to its entity caps) and bob/main (no caps at all). The checks run in order,
each printing "ok: NAME" or "FAIL: NAME - why":

  ibr              XEP-0077: the new user's client gets the registration form before SASL,
                   submits username and password, then authenticates on the same stream
  ibr-login        a fresh connection logs in with the new account
  ibr-conflict     registering alice's username again is refused with <conflict/>
  login            alice/one, bob/pep and bob/main log in
  vcard            XEP-0054: alice sets her vcard-temp; bob, no contact of hers, reads it
  roster-mutual    RFC 6121: alice and bob subscribe to each other over XMPP
  caps             XEP-0115: bob/pep's presence carries caps; the server asks bob/pep for
                   disco#info at NODE#VER and bob/pep answers
  pep-nick         XEP-0163/0172: alice publishes a nick; bob/pep gets the event
  pep-avatar       XEP-0084: alice publishes avatar data and metadata; bob/pep gets the
                   metadata event with the data's SHA-1 as item id
  pep-notify-filter bob/main, whose caps say no +notify, got neither event
  bookmarks-compat XEP-0402 §5: alice stores bookmarks in XEP-0049 private storage (xep_0048);
                   her PEP node urn:xmpp:bookmarks:1 has an item per conference
  bookmarks-pep    the other way: alice publishes a urn:xmpp:bookmarks:1 item (XEP-0402
                   publish-options); xep_0048's private-storage read lists both conferences
  version          XEP-0092: the server's software version
  time             XEP-0202: the server's time, within 60 s of ours
  last-server      XEP-0012 §5: the server's uptime
  last-contact     XEP-0012 §4: the new user logs out; alice, subscribed to him, gets seconds
                   since his logout; bob, not subscribed, gets <forbidden/>
  csi              XEP-0352: bob/main goes inactive; alice's new presence reaches bob/pep but
                   not bob/main within 1.5 s; bob/main goes active and gets it

Exits 0 only when every check passed (all within 60 s). With SLIX_DEBUG=1 in the environment
every stanza each client sends and receives is traced on stderr, prefixed with its JID.
Run with Debian's /usr/bin/python3 (python3-slixmpp).
"""
import asyncio
import datetime
import hashlib
import logging
import os
import re
import sys
import uuid

import slixmpp
from slixmpp.exceptions import IqError

# The client, its recording and the check helpers are those of the IM scenario beside this file.
sys.dont_write_bytecode = True
from slixmpp_im import (  # noqa: E402
    STEP_TIMEOUT_S, CheckFailed, Client, available_from, Checks, expect, is_message, is_presence,
    script_main, show,
)

OVERALL_TIMEOUT_S = 60
CHECKS = [
    "ibr", "ibr-login", "ibr-conflict", "login", "vcard", "roster-mutual", "caps", "pep-nick",
    "pep-avatar", "pep-notify-filter", "bookmarks-compat", "bookmarks-pep", "version", "time",
    "last-server", "last-contact", "csi",
]
DISCO_INFO = "http://jabber.org/protocol/disco#info"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NICK = "http://jabber.org/protocol/nick"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
TIME = "urn:xmpp:time"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
ROOM_PRIVATE = "private@conference.localhost"
ROOM_PEP = "pep@conference.localhost"
# A 1x1 transparent PNG.
AVATAR_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


class ServiceClient(Client):
    """The IM scenario's client, also recording disco#info queries and PEP events."""

    def __init__(self, jid, password, cafile, plugins=()):
        super().__init__(jid, password, cafile, plugins)
        self.disco_queries = []
        self.add_filter("in", self.note_disco_query)
        for name in ("user_nick_publish", "avatar_metadata_publish"):
            self.add_event_handler(name, lambda msg, name=name: self.note(name, msg))

    def note_disco_query(self, stanza):
        query = stanza.xml.find(f"{{{DISCO_INFO}}}query")
        if stanza.xml.tag == "{jabber:client}iq" and stanza.xml.get("type") == "get" and query is not None:
            self.disco_queries.append((stanza.xml.get("from"), query.get("node")))
        return stanza


class Registrant(ServiceClient):
    """Registers its JID's localpart with its password in band before authenticating."""

    def __init__(self, jid, password, cafile):
        super().__init__(jid, password, cafile, ("xep_0077",))
        self.registered = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self.on_register)
        # Without a <register/> stream feature xep_0077 goes straight on to SASL, which fails.
        self.add_event_handler("failed_all_auth", lambda *_: self.refused(
            "the server offered no in-band registration (no <register/> stream feature)"))
        # slixmpp 1.8.3 holds back every iq but bind and session until the session starts, so
        # xep_0077's own registration get would never leave (later slixmpp lets register iqs
        # through). This switch, the one slixmpp's test harness uses, lets them go.
        self._always_send_everything = True

    async def on_register(self, form):
        fields = sorted(f for f in ("username", "password") if form.xml.find(
            f"{{jabber:iq:register}}query/{{jabber:iq:register}}{f}") is not None)
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=STEP_TIMEOUT_S)
        except IqError as error:
            self.refused(f"registration refused: {show(error.iq)}")
            # Not on to SASL with a password the server does not know.
            self.abort()
            return
        except Exception as error:  # noqa: BLE001 - reported by the check
            self.refused(f"registration: {error!r}")
            return
        if not self.registered.done():
            self.registered.set_result(fields)

    def refused(self, why):
        if not self.registered.done():
            self.registered.set_exception(CheckFailed(why))


def pep_items(stanza, node):
    """Items of a PEP event message for `node`, else []."""
    if not is_message(stanza):
        return []
    items = stanza.xml.find(f"{{{PUBSUB_EVENT}}}event/{{{PUBSUB_EVENT}}}items")
    if items is None or items.get("node") != node:
        return []
    return items.findall(f"{{{PUBSUB_EVENT}}}item")


def trace_raw(client, text):
    """Traces what a plugin sent with send_raw, which passes no filter."""
    if os.environ.get("SLIX_DEBUG"):
        client.trace("SEND", text)


def presence_with_status(bare, text):
    return lambda s: available_from(bare)(s) and s["status"] == text



def iq_condition(error):
    """The defined condition of an IqError's <error/>."""
    return error.iq["error"]["condition"]


class Scenario(Checks):
    def __init__(self, host, port, cafile, domain, alice, alice_pw, bob, bob_pw, new, new_pw):
        super().__init__(host, port, cafile, domain)
        self.alice, self.bob, self.new = (f"{u}@{domain}" for u in (alice, bob, new))
        self.passwords = {self.alice: alice_pw, self.bob: bob_pw, self.new: new_pw}

    def client(self, full_jid, plugins=(), password=None, register=False):
        password = password or self.passwords[full_jid.split("/")[0]]
        if register:
            client = Registrant(full_jid, password, self.cafile)
        else:
            client = ServiceClient(full_jid, password, self.cafile, plugins)
        client.auto_authorize = True
        client.auto_subscribe = True
        self.clients.append(client)
        return client

    async def run(self):
        await self.check("ibr", self.ibr)
        await self.check("ibr-login", self.ibr_login)
        await self.check("ibr-conflict", self.ibr_conflict)
        self.one = self.client(f"{self.alice}/one", (
            "xep_0054", "xep_0048", "xep_0060", "xep_0172", "xep_0084", "xep_0092", "xep_0202", "xep_0012"))
        # bob/pep asks for nick and avatar notifications; bob/main has no caps plugin at all.
        self.pep = self.client(f"{self.bob}/pep", ("xep_0115", "xep_0163", "xep_0172", "xep_0084"))
        # A feature of this run alone gives bob/pep a caps ver no server has seen (and cached).
        run_feature = f"urn:confab:test:{uuid.uuid4()}"
        self.pep.add_event_handler("session_bind", lambda _: self.pep["xep_0030"].add_feature(run_feature))
        self.bobc = self.client(f"{self.bob}/main", ("xep_0054", "xep_0012", "xep_0352"))
        await self.check("login", self.login)
        if "login" in self.failed:
            return
        await self.check("vcard", self.vcard)
        await self.check("roster-mutual", self.roster_mutual)
        await self.check("caps", self.caps)
        await self.check("pep-nick", self.pep_nick)
        await self.check("pep-avatar", self.pep_avatar)
        await self.check("pep-notify-filter", self.pep_notify_filter)
        await self.check("bookmarks-compat", self.bookmarks_compat)
        await self.check("bookmarks-pep", self.bookmarks_pep)
        await self.check("version", self.version)
        await self.check("time", self.time)
        await self.check("last-server", self.last_server)
        await self.check("last-contact", self.last_contact)
        await self.check("csi", self.csi)

    async def ibr(self):
        registrant = self.client(f"{self.new}/register", register=True)
        registrant.start(self.host, self.port)
        fields = await asyncio.wait_for(registrant.registered, STEP_TIMEOUT_S)
        expect(fields == ["password", "username"], f"registration form without username and password fields: {fields}")
        await asyncio.wait_for(registrant.online, STEP_TIMEOUT_S)
        await registrant.disconnect(wait=1.0)
        return "registered, then authenticated on the same stream"

    async def ibr_login(self):
        self.newc = self.client(f"{self.new}/again")
        self.newc.start(self.host, self.port)
        await asyncio.wait_for(self.newc.online, STEP_TIMEOUT_S)
        return None

    async def ibr_conflict(self):
        # The thief knows no password of alice's: it registers her name with its own.
        thief = self.client(f"{self.alice}/thief", password="not-alices", register=True)
        thief.start(self.host, self.port)
        try:
            await asyncio.wait_for(thief.registered, STEP_TIMEOUT_S)
        except CheckFailed as error:
            expect(f"<conflict xmlns=\"{STANZAS}\"" in str(error), f"refused, but not with <conflict/>: {error}")
            return None
        raise CheckFailed("registering an existing username succeeded")

    async def login(self):
        for client in (self.one, self.pep, self.bobc):
            client.start(self.host, self.port)
        await asyncio.gather(*(c.online for c in (self.one, self.pep, self.bobc)))

    async def vcard(self):
        card = self.one["xep_0054"].make_vcard()
        card["FN"] = "Alice Liddell"
        card["NICKNAME"] = "ally"
        await self.one["xep_0054"].publish_vcard(card, timeout=STEP_TIMEOUT_S)
        got = await self.bobc["xep_0054"].get_vcard(slixmpp.JID(self.alice), timeout=STEP_TIMEOUT_S)
        read = {e.tag.split("}")[1]: e.text for e in got.xml.find("{vcard-temp}vCard") or ()}
        expect(read.get("FN") == "Alice Liddell" and read.get("NICKNAME") == "ally", f"bob read: {show(got)}")
        return None

    async def roster_mutual(self):
        since = self.one.mark()
        await self.one.update_roster(self.bob, name="Bob")
        self.one.send_presence_subscription(pto=self.bob)
        # bob's clients (auto_subscribe) ask back and alice's (auto_authorize) approves.
        got = await self.one.wait_for(available_from(self.bob), since=since)
        expect(got is not None, "alice got no available presence from bob")
        loop = asyncio.get_event_loop()
        deadline = loop.time() + STEP_TIMEOUT_S
        while True:
            bob_roster = await self.bobc.roster_on_server()
            alice_roster = await self.one.roster_on_server()
            if bob_roster.get(self.alice) == "both" and alice_roster.get(self.bob) == "both":
                break
            expect(loop.time() < deadline, f"bob's roster {bob_roster}, alice's roster {alice_roster}")
            await asyncio.sleep(0.2)
        got = await self.pep.wait_for(available_from(self.alice))
        expect(got is not None, "bob/pep got no available presence from alice")
        return "both rosters say both"

    async def caps(self):
        ver = await self.pep["xep_0115"].get_verstring(self.pep.boundjid)
        node = f"{self.pep['xep_0115'].caps_node}#{ver}"
        seen = await self.one.wait_for(lambda s: is_presence(s) and s["from"] == self.pep.boundjid
                                       and s.xml.find("{http://jabber.org/protocol/caps}c") is not None)
        expect(seen is not None, "alice saw no presence with caps from bob/pep")
        # alice's client may ask too (her xep_0115 does for every new ver): only the server counts.
        server = (self.domain, self.bob)
        loop = asyncio.get_event_loop()
        deadline = loop.time() + STEP_TIMEOUT_S
        while not any(f in server and n == node for f, n in self.pep.disco_queries):
            expect(loop.time() < deadline, f"the server sent no disco#info query for {node}; bob/pep got {self.pep.disco_queries}")
            await asyncio.sleep(0.2)
        asker = next(f for f, n in self.pep.disco_queries if f in server and n == node)
        return f"{asker} asked for {node}"

    async def pep_nick(self):
        self.since_pep_main = self.bobc.mark()
        since = self.pep.mark()
        await self.one["xep_0172"].publish_nick("Queen of Hearts", timeout=STEP_TIMEOUT_S)
        got = await self.pep.wait_for(lambda s: pep_items(s, NICK), since=since)
        expect(got is not None, "bob/pep got no nick event")
        expect(got["from"].bare == self.alice, f"event from {got['from']}")
        nick = got.xml.find(f".//{{{NICK}}}nick")
        expect(nick is not None and nick.text == "Queen of Hearts", f"event: {show(got)}")
        expect(self.pep.events.get("user_nick_publish"), "xep_0172 raised no user_nick_publish")
        return None

    async def pep_avatar(self):
        since = self.pep.mark()
        avatar_id = hashlib.sha1(AVATAR_PNG).hexdigest()
        await self.one["xep_0084"].publish_avatar(AVATAR_PNG, timeout=STEP_TIMEOUT_S)
        info = {"id": avatar_id, "type": "image/png", "bytes": str(len(AVATAR_PNG)), "width": "1", "height": "1"}
        await self.one["xep_0084"].publish_avatar_metadata(info, timeout=STEP_TIMEOUT_S)
        got = await self.pep.wait_for(lambda s: pep_items(s, AVATAR_METADATA), since=since)
        expect(got is not None, "bob/pep got no avatar metadata event")
        item = pep_items(got, AVATAR_METADATA)[0]
        expect(item.get("id") == avatar_id, f"item id {item.get('id')}, not {avatar_id}: {show(got)}")
        expect(self.pep.events.get("avatar_metadata_publish"), "xep_0084 raised no avatar_metadata_publish")
        data = await self.pep["xep_0084"].retrieve_avatar(slixmpp.JID(self.alice), avatar_id, timeout=STEP_TIMEOUT_S)
        expect(data["pubsub"]["items"]["item"]["avatar_data"]["value"] == AVATAR_PNG, f"avatar data: {show(data)}")
        return f"id {avatar_id}, data retrieved"

    async def pep_notify_filter(self):
        # pep-avatar waited for the last event at bob/pep; bob/main's would have arrived too.
        await asyncio.sleep(0.5)
        leaked = [show(s) for s in self.bobc.inbox[self.since_pep_main:]
                  if pep_items(s, NICK) or pep_items(s, AVATAR_METADATA)]
        expect(not leaked, f"bob/main got PEP events without +notify: {leaked}")
        return None

    async def bookmarks_compat(self):
        bookmarks = self.one["xep_0048"].stanza.Bookmarks()
        bookmarks.add_conference(ROOM_PRIVATE, "alice", name="Private room", autojoin=True)
        await self.one["xep_0048"].set_bookmarks(bookmarks, method="xep_0049", timeout=STEP_TIMEOUT_S)
        result = await self.one["xep_0060"].get_items(slixmpp.JID(self.alice), BOOKMARKS, timeout=STEP_TIMEOUT_S)
        items = {i.get("id"): i for i in result.xml.iter("{http://jabber.org/protocol/pubsub}item")}
        expect(ROOM_PRIVATE in items, f"no item {ROOM_PRIVATE} in {BOOKMARKS}: {show(result)}")
        conference = items[ROOM_PRIVATE].find(f"{{{BOOKMARKS}}}conference")
        expect(conference is not None, f"item without a conference: {show(result)}")
        expect(conference.get("name") == "Private room" and conference.get("autojoin") in ("true", "1"),
               f"conference attributes: {show(result)}")
        nick = conference.find(f"{{{BOOKMARKS}}}nick")
        expect(nick is not None and nick.text == "alice", f"conference nick: {show(result)}")
        return None

    async def bookmarks_pep(self):
        conference = slixmpp.ET.Element(f"{{{BOOKMARKS}}}conference", {"name": "PEP room", "autojoin": "false"})
        slixmpp.ET.SubElement(conference, f"{{{BOOKMARKS}}}nick").text = "ally"
        # XEP-0402 §3.2: the publish-options every client sends.
        options = self.one["xep_0004"].make_form(ftype="submit")
        options.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/pubsub#publish-options")
        for var, value in (("pubsub#persist_items", "true"), ("pubsub#max_items", "max"),
                           ("pubsub#send_last_published_item", "never"), ("pubsub#access_model", "whitelist")):
            options.add_field(var=var, value=value)
        await self.one["xep_0060"].publish(None, BOOKMARKS, id=ROOM_PEP, payload=conference, options=options,
                                           timeout=STEP_TIMEOUT_S)
        result = await self.one["xep_0048"].get_bookmarks(method="xep_0049", timeout=STEP_TIMEOUT_S)
        rooms = {str(c["jid"]): c for c in result["private"]["bookmarks"]["conferences"]}
        expect(set(rooms) == {ROOM_PRIVATE, ROOM_PEP}, f"private storage lists {sorted(rooms)}: {show(result)}")
        expect(rooms[ROOM_PEP]["nick"] == "ally" and rooms[ROOM_PEP]["name"] == "PEP room",
               f"converted conference: {show(result)}")
        return None

    async def version(self):
        result = await self.one["xep_0092"].get_version(slixmpp.JID(self.domain), timeout=STEP_TIMEOUT_S)
        version = result["software_version"]
        expect(version["name"] and version["version"], f"version answer: {show(result)}")
        return f"{version['name']} {version['version']}"

    async def time(self):
        result = await self.one["xep_0202"].get_entity_time(slixmpp.JID(self.domain), timeout=STEP_TIMEOUT_S)
        # Read the XML: slixmpp 1.8.3's entity_time["utc"] appends a second "Z" to the "Z" that
        # XEP-0202 §3 puts on <utc/>, and then cannot parse it.
        utc = result.xml.findtext(f"{{{TIME}}}time/{{{TIME}}}utc") or ""
        tzo = result.xml.findtext(f"{{{TIME}}}time/{{{TIME}}}tzo") or ""
        expect(utc.endswith("Z") and re.fullmatch(r"Z|[+-]\d\d:\d\d", tzo), f"time answer: {show(result)}")
        skew = datetime.datetime.fromisoformat(utc) - datetime.datetime.now(datetime.timezone.utc)
        expect(abs(skew.total_seconds()) < 60, f"the server's clock is {skew} off ours: {show(result)}")
        return f"utc {utc} tzo {tzo}"

    async def last_server(self):
        result = await self.one["xep_0012"].get_last_activity(slixmpp.JID(self.domain), timeout=STEP_TIMEOUT_S)
        seconds = result["last_activity"]["seconds"]
        expect(isinstance(seconds, int) and 0 <= seconds < 3600, f"uptime answer: {show(result)}")
        return f"up {seconds} s"

    async def last_contact(self):
        since = self.one.mark()
        await self.one.update_roster(self.new, name="New")
        self.one.send_presence_subscription(pto=self.new)
        got = await self.one.wait_for(lambda s: is_presence(s) and s["from"].bare == self.new
                                      and s["type"] == "subscribed", since=since)
        expect(got is not None, "the new user approved no subscription from alice")
        self.newc.send_presence(ptype="unavailable", pstatus="gone fishing")
        await self.newc.disconnect(wait=1.0)
        await asyncio.sleep(1.0)
        result = await self.one["xep_0012"].get_last_activity(slixmpp.JID(self.new), timeout=STEP_TIMEOUT_S)
        seconds = result["last_activity"]["seconds"]
        expect(isinstance(seconds, int) and 0 <= seconds < 30, f"alice's answer: {show(result)}")
        status = result["last_activity"]["status"]
        expect(status == "gone fishing", f"XEP-0012 §4: the status of the last unavailable presence: {show(result)}")
        try:
            refused = await self.bobc["xep_0012"].get_last_activity(slixmpp.JID(self.new), timeout=STEP_TIMEOUT_S)
        except IqError as error:
            expect(iq_condition(error) == "forbidden", f"bob's error is not forbidden: {show(error.iq)}")
        else:
            raise CheckFailed(f"bob, not subscribed, got an answer: {show(refused)}")
        return f"logged out {seconds} s ago, status {status!r}; bob forbidden"

    async def csi(self):
        expect(self.bobc["xep_0352"].enabled, "the server advertised no urn:xmpp:csi:0 stream feature")
        self.bobc["xep_0352"].send_inactive()
        trace_raw(self.bobc, "<inactive xmlns='urn:xmpp:csi:0'/>")
        await asyncio.sleep(0.3)
        since_main, since_pep = self.bobc.mark(), self.pep.mark()
        self.one.send_presence(pshow="away", pstatus="csi held")
        arrived = await self.pep.wait_for(presence_with_status(self.alice, "csi held"), since=since_pep)
        expect(arrived is not None, "bob/pep (active) did not get alice's new presence")
        early = await self.bobc.wait_for(presence_with_status(self.alice, "csi held"), timeout=1.5, since=since_main)
        expect(early is None, f"inactive bob/main got the presence at once: {show(early) if early else ''}")
        self.bobc["xep_0352"].send_active()
        trace_raw(self.bobc, "<active xmlns='urn:xmpp:csi:0'/>")
        late = await self.bobc.wait_for(presence_with_status(self.alice, "csi held"), since=since_main)
        expect(late is not None, "bob/main did not get the held presence after going active; got: "
               + "; ".join(show(s) for s in self.bobc.inbox[since_main:]))
        return None



if __name__ == "__main__":
    script_main(Scenario, CHECKS, OVERALL_TIMEOUT_S, __doc__)
