#!/usr/bin/python3
"""Two slixmpp clients log in to Confab over STARTTLS (SASL as slixmpp chooses) and chat.

Usage: slixmpp_chat.py HOST PORT CAFILE DOMAIN USER1 PASS1 USER2 PASS2
Exits 0 when each side received the other's message, 1 otherwise (within 20 s).
Run with Debian's /usr/bin/python3 (python3-slixmpp).
"""
import asyncio
import logging
import ssl
import sys

import slixmpp


class Chatter(slixmpp.ClientXMPP):
    def __init__(self, jid, password, cafile):
        # No sasl_mech: slixmpp negotiates as it does for its users (SCRAM-*-PLUS first).
        super().__init__(jid, password)
        self.ssl_context = ssl.create_default_context(cafile=cafile)
        self.online = asyncio.get_event_loop().create_future()
        self.received = asyncio.get_event_loop().create_future()
        self.mechanism = None
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        # failed_auth fires for each mechanism slixmpp gives up on; only running out of them fails.
        self.add_event_handler("failed_all_auth", lambda *_: self.fail("authentication failed"))
        self.add_event_handler("auth_success", self.on_auth)

    def fail(self, why):
        for future in (self.online, self.received):
            if not future.done():
                future.set_exception(RuntimeError(why))

    def on_auth(self, *_):
        self.mechanism = getattr(self["feature_mechanisms"], "mech", None)

    async def on_start(self, _event):
        self.send_presence()
        if not self.online.done():
            self.online.set_result(True)

    def on_message(self, message):
        if message["type"] in ("chat", "normal") and not self.received.done():
            self.received.set_result((str(message["from"]), message["body"]))


async def main(argv):
    host, port, cafile, domain, user1, pass1, user2, pass2 = argv
    alice = Chatter(f"{user1}@{domain}/slix", pass1, cafile)
    bob = Chatter(f"{user2}@{domain}/slix", pass2, cafile)
    for client in (alice, bob):
        # STARTTLS on the c2s port (not direct TLS).
        client.connect((host, int(port)), force_starttls=True, disable_starttls=False)
    await asyncio.wait_for(asyncio.gather(alice.online, bob.online), 20)
    alice.send_message(mto=f"{user2}@{domain}/slix", mbody="hello from alice", mtype="chat")
    bob.send_message(mto=f"{user1}@{domain}", mbody="hello from bob", mtype="chat")
    got_bob = await asyncio.wait_for(bob.received, 20)
    got_alice = await asyncio.wait_for(alice.received, 20)
    assert got_bob == (f"{user1}@{domain}/slix", "hello from alice"), got_bob
    assert got_alice == (f"{user2}@{domain}/slix", "hello from bob"), got_alice
    mechanism = alice.mechanism.name if alice.mechanism is not None else "?"
    print(f"ok: both messages delivered; mechanism {mechanism}")
    for client in (alice, bob):
        client.disconnect()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.get_event_loop().run_until_complete(main(sys.argv[1:]))
    except Exception as error:  # noqa: BLE001 - report any failure as exit 1
        print(f"failed: {error!r}", file=sys.stderr)
        sys.exit(1)
