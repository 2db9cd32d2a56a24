#!/usr/bin/python3
"""Multi-user chat (XEP-0045) scenario with real slixmpp clients against Confab.

Usage: slixmpp_muc.py HOST PORT CAFILE DOMAIN OWNER PASS MEMBER PASS PARTICIPANT PASS

The MUC service is conference.DOMAIN; the room, new in every run, is muc-<random>@ there.
Clients: the owner's, the member's and the participant's (each RESOURCE "muc"), in the room
as OwnerNick, MemberNick and ParticipantNick. The checks run in order, each printing
"ok: NAME" or "FAIL: NAME - why":

  login            the three clients log in (STARTTLS, SCRAM-SHA-256)
  create           §10.1: the owner's join creates the room: its self-presence has status
                   codes 110 and 201, affiliation owner, role moderator
  configure        §10.1.3: the owner gets the muc#owner form (FORM_TYPE
                   http://jabber.org/protocol/muc#roomconfig) and submits persistentroom=1,
                   membersonly=1 and a roomname; §6.4: the room's disco#info then has identity
                   conference/text and features muc_persistent and muc_membersonly
  members-only     §7.2.6: the participant, no member, is refused with a presence error
                   <registration-required/> (type auth) from the occupant JID it asked for
  history          §7.4: the owner posts two groupchat messages and receives both reflections
                   from room/OwnerNick
  invite           §7.8.2: the owner's mediated invitation (<invite to=member's bare JID> with
                   a reason) reaches the member from the room's bare JID with <invite from=the
                   owner's JID or occupant JID> and the reason
  member-joins     §7.1, §7.2.2: the member (on the member list since the invitation, §9.5)
                   joins and receives, in this order: the owner's presence (owner/moderator),
                   its own with 110 (affiliation member), both history messages from
                   room/OwnerNick with <delay xmlns='urn:xmpp:delay' from=room/> in order, then
                   the subject (<subject/>, no body); the owner gets the member's presence
  grant            §9.3: the owner adds the participant to the member list (muc#admin item
                   affiliation=member jid=bare JID): result; the participant then joins with
                   110, affiliation member, role participant
  groupchat        §7.4: the member posts; owner and participant receive it from room/MemberNick
  private-message  §7.5: the participant sends type chat to room/MemberNick; the member
                   receives it from room/ParticipantNick
  subject          §8.1: the owner changes the subject; all three occupants receive it from
                   room/OwnerNick
  kick             §8.2: the owner kicks the participant (role none, with a reason): the
                   participant gets unavailable presence with 307 and 110; owner and member get
                   it with 307 and no 110; the owner's iq gets a result
  mam              XEP-0313 §4: the owner queries the room's archive (iq set to the room's bare
                   JID, urn:xmpp:mam:2); the results, from the room, hold both history bodies
                   and the member's groupchat body

Section numbers are those of the current XEP-0045. Exits 0 only when every check passed (all
within 60 s). With SLIX_DEBUG=1 in the environment every stanza each client sends and
receives is traced on stderr, prefixed with its JID. Run with Debian's /usr/bin/python3
(python3-slixmpp).
"""
import asyncio
import sys
import uuid

import slixmpp

# The client, its recording and the check runner are those of the IM scenario beside this file.
sys.dont_write_bytecode = True
from slixmpp_im import (  # noqa: E402
    STEP_TIMEOUT_S, Client, body, Checks, expect, is_message, is_presence,
    script_main, show,
)

OVERALL_TIMEOUT_S = 60
CHECKS = [
    "login", "create", "configure", "members-only", "history", "invite", "member-joins", "grant",
    "groupchat", "private-message", "subject", "kick", "mam",
]
MUC = "http://jabber.org/protocol/muc"
MUC_USER = "http://jabber.org/protocol/muc#user"
ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
DATA = "jabber:x:data"
DELAY = "urn:xmpp:delay"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
OWNER_NICK, MEMBER_NICK, PARTICIPANT_NICK = "OwnerNick", "MemberNick", "ParticipantNick"
HISTORY = ("m1 owner's first, before the member is in", "m2 owner's second, before the member is in")
GROUPCHAT = "m3 member to the room"
PRIVATE = "p1 participant to the member, privately"
SUBJECT = "s1 the owner's new subject"
INVITE_REASON = "come in, member"
KICK_REASON = "k1 out you go"



def muc_x(stanza):
    """The <x xmlns='http://jabber.org/protocol/muc#user'/> of a stanza, or None."""
    return stanza.xml.find(f"{{{MUC_USER}}}x")


def status_codes(stanza):
    """The muc#user status codes of a stanza, as a set of ints."""
    x = muc_x(stanza)
    if x is None:
        return set()
    return {int(s.get("code")) for s in x.findall(f"{{{MUC_USER}}}status") if (s.get("code") or "").isdigit()}


def muc_item(stanza):
    """The attributes of the muc#user <item/> of a stanza ({} when there is none)."""
    x = muc_x(stanza)
    item = x.find(f"{{{MUC_USER}}}item") if x is not None else None
    return dict(item.attrib) if item is not None else {}


def occupant_presence(jid, available=True):
    """Available (or unavailable) presence from the occupant JID `jid`."""
    def match(s):
        if not is_presence(s) or str(s["from"]) != jid:
            return False
        return s["type"] == "unavailable" if not available else s["type"] not in ("unavailable", "error")
    return match


def self_presence(jid):
    return lambda s: occupant_presence(jid)(s) and 110 in status_codes(s)


def groupchat_from(jid, text):
    return lambda s: is_message(s) and s["type"] == "groupchat" and str(s["from"]) == jid and body(s) == text


def subject_of(stanza):
    """The text of a message's top-level <subject/> ("" when empty), or None without one."""
    if not is_message(stanza):
        return None
    element = stanza.xml.find("{jabber:client}subject")
    return None if element is None else (element.text or "")


def error_condition(stanza):
    error = stanza.xml.find("{jabber:client}error")
    if error is None:
        return None, None
    conditions = [e.tag.split("}")[1] for e in error if e.tag.startswith(f"{{{STANZAS}}}") and not e.tag.endswith("}text")]
    return error.get("type"), (conditions[0] if conditions else None)


def got(client, since, kind=None):
    """What a client recorded from `since` on, for failure messages."""
    return "; ".join(show(s) for s in client.inbox[since:] if kind is None or kind(s)) or "nothing"


class Scenario(Checks):
    def __init__(self, host, port, cafile, domain, owner, owner_pw, member, member_pw, participant, participant_pw):
        super().__init__(host, port, cafile, domain)
        self.owner, self.member, self.participant = (f"{u}@{domain}" for u in (owner, member, participant))
        self.passwords = {self.owner: owner_pw, self.member: member_pw, self.participant: participant_pw}
        self.room = f"muc-{uuid.uuid4().hex[:10]}@conference.{domain}"
        self.nick = {n: f"{self.room}/{n}" for n in (OWNER_NICK, MEMBER_NICK, PARTICIPANT_NICK)}

    def client(self, full_jid, plugins=()):
        client = Client(full_jid, self.passwords[full_jid.split("/")[0]], self.cafile, plugins)
        self.clients.append(client)
        return client

    async def run(self):
        plugins = ("xep_0004", "xep_0045")
        self.ownerc = self.client(f"{self.owner}/muc", (*plugins, "xep_0059", "xep_0313"))
        self.memberc = self.client(f"{self.member}/muc", plugins)
        self.partc = self.client(f"{self.participant}/muc", plugins)
        await self.check("login", self.login)
        if "login" in self.failed:
            return
        await self.check("create", self.create)
        if "create" in self.failed:
            return
        await self.check("configure", self.configure)
        await self.check("members-only", self.members_only)
        await self.check("history", self.history)
        await self.check("invite", self.invite)
        await self.check("member-joins", self.member_joins)
        await self.check("grant", self.grant)
        await self.check("groupchat", self.groupchat)
        await self.check("private-message", self.private_message)
        await self.check("subject", self.subject)
        await self.check("kick", self.kick)
        await self.check("mam", self.mam)

    def join(self, client, nick):
        """Sends the §7.2.2 join: presence to room/nick with an empty <x xmlns=muc/>."""
        presence = client.Presence()
        presence["to"] = self.nick[nick]
        presence.xml.append(slixmpp.ET.Element(f"{{{MUC}}}x"))
        presence.send()

    async def joined(self, client, nick, since):
        """The self-presence (110) for a join sent after `since`; fails on an error presence."""
        jid = self.nick[nick]
        answer = await client.wait_for(
            lambda s: self_presence(jid)(s) or (is_presence(s) and s["type"] == "error" and s["from"].bare == self.room),
            since=since)
        expect(answer is not None, f"no self-presence (status 110) from {jid}; got: {got(client, since)}")
        expect(answer["type"] != "error", f"join refused: {show(answer)}")
        return answer

    async def login(self):
        for client in (self.ownerc, self.memberc, self.partc):
            client.start(self.host, self.port)
        await asyncio.gather(*(c.online for c in (self.ownerc, self.memberc, self.partc)))

    async def create(self):
        since = self.ownerc.mark()
        self.join(self.ownerc, OWNER_NICK)
        presence = await self.joined(self.ownerc, OWNER_NICK, since)
        codes, item = status_codes(presence), muc_item(presence)
        # §10.1.1: a new room's self-presence carries 201 (room created) besides 110.
        expect({110, 201} <= codes, f"status codes {sorted(codes)}, not 110 and 201: {show(presence)}")
        expect(item.get("affiliation") == "owner" and item.get("role") == "moderator",
               f"item {item}, not owner/moderator: {show(presence)}")
        return f"{self.room} created"

    async def configure(self):
        muc = self.ownerc["xep_0045"]
        form = await muc.get_room_config(slixmpp.JID(self.room), timeout=STEP_TIMEOUT_S)
        values = {f.get("var"): [v.text for v in f.findall(f"{{{DATA}}}value")] for f in form.xml.findall(f"{{{DATA}}}field")}
        expect(values.get("FORM_TYPE") == [ROOMCONFIG], f"FORM_TYPE {values.get('FORM_TYPE')}: {show(form)}")
        for var in ("muc#roomconfig_persistentroom", "muc#roomconfig_membersonly", "muc#roomconfig_roomname"):
            expect(var in values, f"the configuration form has no {var} field: {show(form)}")
        # §10.1.3: the owner submits the form; only the fields it changes (and FORM_TYPE).
        submit = self.ownerc["xep_0004"].make_form(ftype="submit")
        submit.add_field(var="FORM_TYPE", ftype="hidden", value=ROOMCONFIG)
        submit.add_field(var="muc#roomconfig_roomname", value="Confab MUC scenario")
        submit.add_field(var="muc#roomconfig_persistentroom", value="1")
        submit.add_field(var="muc#roomconfig_membersonly", value="1")
        await muc.set_room_config(slixmpp.JID(self.room), submit, timeout=STEP_TIMEOUT_S)
        info = await self.ownerc["xep_0030"].get_info(jid=slixmpp.JID(self.room), timeout=STEP_TIMEOUT_S)
        features = set(info["disco_info"]["features"])
        identities = {(i[0], i[1]) for i in info["disco_info"]["identities"]}
        expect(("conference", "text") in identities, f"§6.4: no conference/text identity: {show(info)}")
        missing = {"muc_persistent", "muc_membersonly"} - features
        expect(not missing, f"disco#info lacks {sorted(missing)}: {show(info)}")
        return None

    async def members_only(self):
        since = self.partc.mark()
        self.join(self.partc, PARTICIPANT_NICK)
        jid = self.nick[PARTICIPANT_NICK]
        answer = await self.partc.wait_for(
            lambda s: is_presence(s) and s["from"].bare == self.room and (s["type"] == "error" or 110 in status_codes(s)),
            since=since)
        expect(answer is not None, f"no answer to the participant's join; got: {got(self.partc, since)}")
        expect(answer["type"] == "error", f"a non-member entered the members-only room: {show(answer)}")
        kind, condition = error_condition(answer)
        expect(condition == "registration-required" and kind == "auth",
               f"error {kind}/{condition}, not auth/registration-required: {show(answer)}")
        expect(str(answer["from"]) == jid, f"error from {answer['from']}, not the occupant JID {jid}")
        return None

    async def history(self):
        own = self.nick[OWNER_NICK]
        for text in HISTORY:
            since = self.ownerc.mark()
            self.ownerc.send_message(mto=self.room, mbody=text, mtype="groupchat")
            # §7.4: the service reflects the message, from the sender's occupant JID, to every
            # occupant, the sender included.
            reflection = await self.ownerc.wait_for(groupchat_from(own, text), since=since)
            expect(reflection is not None, f"no reflection of {text!r} from {own}; got: {got(self.ownerc, since)}")
        return None

    async def invite(self):
        since = self.memberc.mark()
        # §7.8.2: <message to=room><x xmlns=muc#user><invite to=bare JID><reason/></invite></x>.
        self.ownerc["xep_0045"].invite(slixmpp.JID(self.room), slixmpp.JID(self.member), INVITE_REASON)

        def invitation(s):
            x = muc_x(s) if is_message(s) else None
            return x is not None and x.find(f"{{{MUC_USER}}}invite") is not None
        message = await self.memberc.wait_for(invitation, since=since)
        expect(message is not None, f"the member got no invitation; got: {got(self.memberc, since)}")
        expect(str(message["from"]) == self.room, f"invitation from {message['from']}, not the room's bare JID")
        invite = muc_x(message).find(f"{{{MUC_USER}}}invite")
        # §7.8.2: the room adds a 'from' with the inviter's bare JID, full JID or occupant JID.
        inviter = invite.get("from") or ""
        inviters = (self.owner, str(self.ownerc.boundjid), self.nick[OWNER_NICK])
        expect(inviter in inviters, f"<invite from={inviter!r}>, not one of {inviters}: {show(message)}")
        reason = invite.findtext(f"{{{MUC_USER}}}reason")
        expect(reason == INVITE_REASON, f"invitation reason {reason!r}, not {INVITE_REASON!r}: {show(message)}")
        return f"from {inviter}"

    async def member_joins(self):
        since, since_owner = self.memberc.mark(), self.ownerc.mark()
        self.join(self.memberc, MEMBER_NICK)
        own, mine = self.nick[OWNER_NICK], self.nick[MEMBER_NICK]
        presence = await self.joined(self.memberc, MEMBER_NICK, since)
        item = muc_item(presence)
        expect(item.get("affiliation") == "member" and item.get("role") == "participant",
               f"the member's item {item}, not member/participant: {show(presence)}")
        # §7.2.15 (Room Subject): the subject comes last; with none set it is an empty <subject/> (no body).
        subject = await self.memberc.wait_for(
            lambda s: subject_of(s) is not None and s["type"] == "groupchat" and s["from"].bare == self.room
            and body(s) is None, since=since)
        expect(subject is not None, f"no subject message after the join; got: {got(self.memberc, since)}")
        seen = self.memberc.inbox[since:]

        def first(predicate, what):
            index = next((i for i, s in enumerate(seen) if predicate(s)), None)
            expect(index is not None, f"no {what} after the join; got: {got(self.memberc, since)}")
            return index
        # §7.1: presence of the other occupants, self-presence, history, subject.
        at_owner = first(occupant_presence(own), f"presence from {own}")
        owner_item = muc_item(seen[at_owner])
        expect(owner_item.get("affiliation") == "owner" and owner_item.get("role") == "moderator",
               f"the owner's item {owner_item}: {show(seen[at_owner])}")
        at_self = first(self_presence(mine), "self-presence")
        at_history = [first(groupchat_from(own, text), f"history message {text!r}") for text in HISTORY]
        at_subject = seen.index(subject)
        order = [at_owner, at_self, *at_history, at_subject]
        expect(order == sorted(order) and len(set(order)) == len(order),
               f"§7.1 order owner presence, self-presence, history, subject broken: positions {order}; "
               f"got: {got(self.memberc, since)}")
        for index in at_history:
            delay = seen[index].xml.find(f"{{{DELAY}}}delay")
            # Discussion History (§7.2.13): stamped with urn:xmpp:delay, from the room's JID.
            expect(delay is not None and delay.get("stamp"), f"history without a delay stamp: {show(seen[index])}")
            expect(delay.get("from") == self.room, f"delay from {delay.get('from')!r}, not {self.room}: {show(seen[index])}")
        # §7.2.2: the existing occupants get the new occupant's presence.
        broadcast = await self.ownerc.wait_for(occupant_presence(mine), since=since_owner)
        expect(broadcast is not None, f"the owner got no presence from {mine}; got: {got(self.ownerc, since_owner)}")
        return f"subject {subject_of(subject)!r}"

    async def grant(self):
        # §9.3: <iq type=set to=room><query xmlns=muc#admin><item affiliation=member jid=bare/>.
        await self.ownerc["xep_0045"].set_affiliation(
            slixmpp.JID(self.room), "member", jid=slixmpp.JID(self.participant), timeout=STEP_TIMEOUT_S)
        since = self.partc.mark()
        self.join(self.partc, PARTICIPANT_NICK)
        presence = await self.joined(self.partc, PARTICIPANT_NICK, since)
        item = muc_item(presence)
        expect(item.get("affiliation") == "member" and item.get("role") == "participant",
               f"the participant's item {item}, not member/participant: {show(presence)}")
        # Let the join (history, subject) finish before the next check sends.
        subject = await self.partc.wait_for(lambda s: subject_of(s) is not None and s["from"].bare == self.room, since=since)
        expect(subject is not None, f"no subject after the participant's join; got: {got(self.partc, since)}")
        return None

    async def groupchat(self):
        since = {c: c.mark() for c in (self.ownerc, self.partc)}
        self.memberc.send_message(mto=self.room, mbody=GROUPCHAT, mtype="groupchat")
        for client in (self.ownerc, self.partc):
            message = await client.wait_for(groupchat_from(self.nick[MEMBER_NICK], GROUPCHAT), since=since[client])
            expect(message is not None, f"{client.boundjid} got no groupchat from {self.nick[MEMBER_NICK]}; "
                   f"got: {got(client, since[client], is_message)}")
        return None

    async def private_message(self):
        since = self.memberc.mark()
        self.partc.send_message(mto=self.nick[MEMBER_NICK], mbody=PRIVATE, mtype="chat")
        # §7.5: the service rewrites 'from' to the sender's occupant JID.
        message = await self.memberc.wait_for(lambda s: is_message(s) and body(s) == PRIVATE, since=since)
        expect(message is not None, f"the member got no private message; got: {got(self.memberc, since, is_message)}")
        expect(str(message["from"]) == self.nick[PARTICIPANT_NICK] and message["type"] == "chat",
               f"private message from {message['from']} type {message['type']!r}: {show(message)}")
        return None

    async def subject(self):
        clients = (self.ownerc, self.memberc, self.partc)
        since = {c: c.mark() for c in clients}
        self.ownerc["xep_0045"].set_subject(slixmpp.JID(self.room), SUBJECT)
        own = self.nick[OWNER_NICK]
        for client in clients:
            message = await client.wait_for(lambda s: subject_of(s) == SUBJECT and s["type"] == "groupchat", since=since[client])
            expect(message is not None, f"{client.boundjid} got no new subject; got: {got(client, since[client], is_message)}")
            expect(str(message["from"]) == own, f"{client.boundjid} got the subject from {message['from']}, not {own}")
        return None

    async def kick(self):
        clients = (self.ownerc, self.memberc, self.partc)
        since = {c: c.mark() for c in clients}
        kicked = self.nick[PARTICIPANT_NICK]
        # §8.2: <iq type=set to=room><query xmlns=muc#admin><item nick=.. role=none><reason/>.
        await self.ownerc["xep_0045"].set_role(
            slixmpp.JID(self.room), PARTICIPANT_NICK, "none", reason=KICK_REASON, timeout=STEP_TIMEOUT_S)
        for client in clients:
            presence = await client.wait_for(occupant_presence(kicked, available=False), since=since[client])
            expect(presence is not None, f"{client.boundjid} got no unavailable presence from {kicked}; "
                   f"got: {got(client, since[client], is_presence)}")
            codes, item = status_codes(presence), muc_item(presence)
            expect(307 in codes, f"{client.boundjid}: no status 307: {show(presence)}")
            expect(item.get("role") == "none", f"{client.boundjid}: item {item}, role not none: {show(presence)}")
            if client is self.partc:
                expect(110 in codes, f"the kicked participant's presence lacks 110: {show(presence)}")
            else:
                expect(110 not in codes, f"{client.boundjid} got 110 for someone else's kick: {show(presence)}")
        return None

    async def mam(self):
        # XEP-0313 §4: a MUC archive is queried at the room's bare JID; slixmpp collects only
        # results whose 'from' is the room.
        result = await self.ownerc["xep_0313"].retrieve(jid=slixmpp.JID(self.room), timeout=STEP_TIMEOUT_S)
        bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in result["mam"]["results"]]
        for text in (*HISTORY, GROUPCHAT):
            expect(text in bodies, f"{text!r} missing from the room's archive: {bodies}")
        positions = [bodies.index(text) for text in (*HISTORY, GROUPCHAT)]
        expect(positions == sorted(positions), f"archive out of order: {bodies}")
        return f"{len(bodies)} messages"



if __name__ == "__main__":
    script_main(Scenario, CHECKS, OVERALL_TIMEOUT_S, __doc__)
