#!/usr/bin/python3
"""Client programs nobody here wrote, in their default behaviour, against Confab's defaults.

Usage: slixmpp_real_clients.py HOST PORT TLS_PORT CAFILE DOMAIN RECEIVER RECEIVER_PW SENDER SENDER_PW

A python3-slixmpp receiver (default SASL negotiation: it tries SCRAM-*-PLUS with tls-unique
first) logs in and creates a room; then go-sendxmpp (Go, go-xmpp) and sendxmpp (Perl,
Net::XMPP) each send it a message over STARTTLS and over direct TLS (XEP-0368), and
go-sendxmpp posts to the room (-c). Finally a slixmpp client logs in ten times in a row from the
same address. One "ok:"/"FAIL:" line per check; exit 0 when all pass.
"""
import asyncio
import logging
import secrets
import sys

import slixmpp

from slixmpp_im import Checks, Client, CheckFailed, body, expect, is_message

OVERALL_TIMEOUT_S = 150
SEND_TIMEOUT_S = 30


class RealClients(Checks):
    def __init__(self, host, port, tls_port, cafile, domain, receiver, receiver_pw, sender, sender_pw):
        super().__init__(host, port, cafile, domain)
        self.tls_port = tls_port
        self.receiver, self.receiver_pw = f"{receiver}@{domain}", receiver_pw
        self.sender, self.sender_pw = f"{sender}@{domain}", sender_pw
        self.room = f"real-clients@conference.{domain}"
        self.nonce = secrets.token_hex(4)

    async def run(self):
        self.inbox = Client(f"{self.receiver}/desk", self.receiver_pw, self.cafile, ("xep_0045", "xep_0004"))
        self.clients.append(self.inbox)
        await self.check("login-with-defaults", self.login)
        if self.passed == 0:
            return
        await self.check("room-created", self.create_room)
        for name, command in self.senders():
            await self.check(name, lambda command=command, name=name: self.delivered(name, command), timeout=SEND_TIMEOUT_S + 10)
        await self.check("go-sendxmpp-room", self.room_post, timeout=SEND_TIMEOUT_S + 10)
        await self.check("ten-logins-from-one-address", self.ten_logins, timeout=90)

    async def login(self):
        self.inbox.start(self.host, self.port)
        await self.inbox.online
        mechanism = getattr(self.inbox["feature_mechanisms"], "mech", None)
        return f"mechanism {mechanism.name if mechanism is not None else '?'}"

    async def create_room(self):
        muc = self.inbox.plugin["xep_0045"]
        since = self.inbox.mark()
        muc.join_muc(slixmpp.JID(self.room), "inbox")
        joined = await self.inbox.wait_for(lambda s: s.xml.tag == "{jabber:client}presence" and str(s["from"]) == f"{self.room}/inbox", since=since)
        expect(joined is not None, "no self-presence from the room")
        # XEP-0045 §10.1.2: an instant room, unlocked with an empty submitted form.
        submit = self.inbox["xep_0004"].make_form(ftype="submit")
        await muc.set_room_config(slixmpp.JID(self.room), submit, timeout=SEND_TIMEOUT_S)
        return self.room

    def senders(self):
        user = self.sender.split("@")[0]
        return [
            ("go-sendxmpp-starttls", ["go-sendxmpp", "-n", "-u", self.sender, "-p", self.sender_pw, "-j", f"{self.host}:{self.port}", self.receiver]),
            ("go-sendxmpp-direct-tls", ["go-sendxmpp", "-n", "-t", "-u", self.sender, "-p", self.sender_pw, "-j", f"{self.host}:{self.tls_port}", self.receiver]),
            # sendxmpp takes the server's name for the stream header from -j.
            ("sendxmpp-starttls", ["sendxmpp", "-t", "-n", "-u", user, "-p", self.sender_pw, "-j", f"{self.domain}:{self.port}", self.receiver]),
            ("sendxmpp-direct-tls", ["sendxmpp", "-e", "-n", "-u", user, "-p", self.sender_pw, "-j", f"{self.domain}:{self.tls_port}", self.receiver]),
        ]

    async def run_program(self, command, text):
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(text.encode()), SEND_TIMEOUT_S)
        if process.returncode != 0:
            raise CheckFailed(f"{command[0]} exited {process.returncode}: {out.decode(errors='replace')} {err.decode(errors='replace')}"[:600])

    async def delivered(self, name, command):
        text = f"{name} {self.nonce}"
        since = self.inbox.mark()
        await self.run_program(command, text)
        got = await self.inbox.wait_for(lambda s: is_message(s) and s["type"] != "error" and (body(s) or "").strip() == text, since=since)
        expect(got is not None, f"the receiver never got {text!r}")
        return f"from {got['from']}"

    async def room_post(self):
        text = f"room post {self.nonce}"
        since = self.inbox.mark()
        command = ["go-sendxmpp", "-n", "-c", "-a", "gobot", "-u", self.sender, "-p", self.sender_pw, "-j", f"{self.host}:{self.port}", self.room]
        await self.run_program(command, text)
        got = await self.inbox.wait_for(
            lambda s: is_message(s) and s["type"] == "groupchat" and (body(s) or "").strip() == text, since=since
        )
        expect(got is not None, f"the room never relayed {text!r}")
        return f"from {got['from']}"

    async def ten_logins(self):
        mechanisms = []
        for n in range(10):
            client = Client(f"{self.sender}/login{n}", self.sender_pw, self.cafile)
            client.start(self.host, self.port)
            try:
                await asyncio.wait_for(client.online, 20)
            except Exception as error:  # noqa: BLE001 - which login failed is the check's detail
                raise CheckFailed(f"login {n + 1} of 10 failed: {error!r}") from error
            mechanism = getattr(client["feature_mechanisms"], "mech", None)
            mechanisms.append(mechanism.name if mechanism is not None else "?")
            client.disconnect()
            await asyncio.wait_for(client.disconnected, 10)
        return f"10/10 with {sorted(set(mechanisms))}"


async def main(argv):
    scenario = RealClients(*argv)
    try:
        await asyncio.wait_for(scenario.run(), OVERALL_TIMEOUT_S)
    except asyncio.TimeoutError:
        scenario.report("overall", False, f"timed out after {OVERALL_TIMEOUT_S} s")
    finally:
        await scenario.close()
    if scenario.failed or scenario.passed == 0:
        return 1
    print(f"ok: all {scenario.passed} checks", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 10:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.exit(asyncio.get_event_loop().run_until_complete(main(sys.argv[1:])))
