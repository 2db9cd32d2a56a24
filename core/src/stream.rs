//! The client-to-server stream state machine (RFC 6120 §4–§7): header checks, stream
//! features, STARTTLS, SASL and resource binding, then hand-off of stanzas to the router.
//!
//! Sans-I/O: frames from the framer come in, `Action`s go out (bytes to write, "start TLS",
//! "look up these credentials", "bind this resource"). Anything that needs the outside world
//! (the account store, the session table, randomness) is asked for with an action or an
//! `Entropy` argument and answered through a method. This module does not route stanzas,
//! touch sockets or know which shard it runs on; the stream error conditions it emits are
//! mapped from each failure here and nowhere else.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::framer::{Frame, FramerError, Stanza, StreamOpen, STREAMS_NAMESPACE};
use crate::jid::{prepare_domain, prepare_local, prepare_resource, BareJid, FullJid};
use crate::limits::{SASL_ATTEMPTS_MAX, SASL_NEGOTIATION_FAILURES_MAX};
use crate::routing::{error_reply, StanzaKind, BIND_NAMESPACE};
use crate::sasl::{ChannelBindings, Mechanism, SaslFailure, ScramCredentials, ScramHash, ScramServer};
use crate::xml::{escape_attribute, escape_text};

/// RFC 6120 §4.8.2: the content namespace of client streams.
pub const CLIENT_NAMESPACE: &str = "jabber:client";
pub const TLS_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const STREAM_ERRORS_NAMESPACE: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// XEP-0440: SASL channel-binding type capability.
pub const SASL_CB_NAMESPACE: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0198 stream management: its top-level elements are handed to the runtime.
pub const SM_NAMESPACE: &str = "urn:xmpp:sm:3";
/// XEP-0352 client state indication: `<active/>` and `<inactive/>` go to the runtime.
pub const CSI_NAMESPACE: &str = "urn:xmpp:csi:0";
/// RFC 6121 §2.6.1 roster versioning stream feature.
pub const ROSTER_VERSIONING_NAMESPACE: &str = "urn:xmpp:features:rosterver";

/// What the stream needs to know about the server; immutable, shared by all connections.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The server's domain, prepared (RFC 7622 §3.2).
    pub domain: String,
    /// When true (the default), nothing but STARTTLS is accepted before TLS (RFC 6120 §5.3.1).
    pub tls_required: bool,
    /// Secret that keys the fake SCRAM salts handed out for unknown users.
    pub server_secret: Vec<u8>,
    /// PBKDF2 iterations announced in fake credentials; equal to those of real ones, so the
    /// two cannot be told apart.
    pub scram_iterations: u32,
    pub sasl_attempts_max: u32,
    /// RFC 5802 §6 downgrade check: fail a SCRAM exchange whose gs2 flag is "y" ("client
    /// supports channel binding, thinks the server does not") while -PLUS was offered.
    /// Off by default: with XEP-0440 the client sees our binding types, and a client that
    /// supports only others (tls-unique, which TLS 1.3 lacks, as python's slixmpp does)
    /// honestly sends "y"; failing it locks such clients out. Enable where every client
    /// supports tls-exporter or tls-server-end-point.
    pub reject_channel_binding_downgrade: bool,
    /// XEP-0077 in-band registration of new accounts before authentication (off by default).
    pub registration: bool,
}

/// XEP-0077 in-band registration namespace and its stream feature.
pub const REGISTER_NAMESPACE: &str = "jabber:iq:register";
pub const REGISTER_FEATURE_NAMESPACE: &str = "http://jabber.org/features/iq-register";

/// Randomness from the runtime (the core owns no RNG).
pub trait Entropy {
    /// A fresh unpredictable token of printable ASCII without ',' (used for stream ids,
    /// SCRAM nonces, generated resources).
    fn token(&mut self) -> String;
}

/// A request from the stream to its runtime, or bytes to send.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the peer (through TLS when it is active).
    Send(Vec<u8>),
    /// `<proceed/>` has been queued: flush it in clear, run the TLS handshake, restart the
    /// framer discarding buffered bytes, then call `C2sStream::tls_established`.
    StartTls,
    /// SASL succeeded: restart the framer keeping buffered bytes (RFC 6120 §6.4.6).
    RestartStream,
    /// An authentication attempt for this user starts: SCRAM needs the user's credentials.
    /// Answer with `C2sStream::credentials`, or `C2sStream::attempt_refused` when the attempt
    /// may not start (throttled). Settled later by `Authenticated`, `AuthFailed` or
    /// `AuthAbandoned`.
    LookupCredentials { user: BareJid, hash: ScramHash },
    /// An authentication attempt starts: PLAIN needs the password checked against the stored
    /// credentials (PBKDF2, expensive). Answer with `C2sStream::plain_checked` or
    /// `C2sStream::attempt_refused`; settled like `LookupCredentials`.
    VerifyPlain { user: BareJid, password: String },
    /// The SCRAM proof was checked: may its verdict still be given (no ban since the attempt
    /// started)? Asked for a right and a wrong proof alike, so that a refusal tells nothing
    /// about the password. Answer with `C2sStream::verdict_confirmed`.
    ConfirmVerdict(BareJid),
    /// The attempt succeeded for this account.
    Authenticated(BareJid),
    /// The attempt failed on its credentials: a wrong password or proof (or an unknown user,
    /// indistinguishably). Only this counts toward bans.
    AuthFailed(BareJid),
    /// The attempt ended without a verdict on the credentials (aborted, malformed, refused).
    AuthAbandoned(BareJid),
    /// The client asked to bind this (prepared or generated) resource: answer with
    /// `C2sStream::bind_result`.
    Bind { jid: FullJid, id: String },
    /// XEP-0077 §3.1: create this account (the password is not stored: derive SCRAM secrets)
    /// and answer the iq `id` with a result or an error.
    Register { id: String, user: BareJid, password: String },
    /// A stanza from the bound client was handled by the stream itself (answered with an
    /// error, not routed): it counts as received for XEP-0198 acknowledgements.
    StanzaHandled,
    /// Close the connection once everything queued has been written.
    Close,
}

/// A stream-level error condition (RFC 6120 §4.9.3) and optional text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub condition: &'static str,
    pub text: Option<Cow<'static, str>>,
}

impl StreamError {
    pub fn new(condition: &'static str) -> StreamError {
        StreamError { condition, text: None }
    }

    pub fn with_text(condition: &'static str, text: impl Into<Cow<'static, str>>) -> StreamError {
        StreamError { condition, text: Some(text.into()) }
    }
}

impl From<FramerError> for StreamError {
    fn from(error: FramerError) -> StreamError {
        StreamError::with_text(error.condition(), error.text())
    }
}

/// Where the negotiation stands.
#[derive(Debug)]
enum Phase {
    /// Waiting for the (next) stream header.
    AwaitingHeader,
    /// Header received and features sent; waiting for STARTTLS, SASL or bind.
    Open,
    /// `<proceed/>` sent; nothing more is read until `tls_established`.
    AwaitingTls,
    /// SCRAM `<auth>` came without initial response; an empty challenge was sent.
    ScramAwaitingFirst(Mechanism),
    /// Waiting for the runtime's `credentials` answer.
    ScramAwaitingCredentials(Box<ScramServer>, BareJid, ScramHash),
    /// server-first sent; waiting for client-final in `<response>`.
    ScramAwaitingFinal(Box<ScramServer>, BareJid),
    /// Waiting for the runtime's `plain_checked` answer.
    PlainAwaitingCheck(BareJid),
    /// The proof was checked; waiting for the runtime's `verdict_confirmed` answer, with the
    /// server-final message to send if the proof was right (`None`: it was wrong).
    AwaitingConfirmation(BareJid, Option<Vec<u8>>),
    /// Waiting for the runtime's `bind_result` answer.
    BindPending,
    /// Resource bound: stanzas flow to the router.
    Bound,
    Closed,
}

/// One client stream's negotiation state; `Send`, so a connection can move between shards.
#[derive(Debug)]
pub struct C2sStream {
    phase: Phase,
    header_sent: bool,
    /// Channel bindings of the TLS layer once it is up (XEP-0440, RFC 9266, RFC 5929).
    tls: Option<ChannelBindings>,
    user: Option<BareJid>,
    bound: Option<FullJid>,
    /// Wrong passwords or proofs on this stream (RFC 6120 §6.4.5 retries).
    credential_failures: u32,
    /// Failed negotiations: mechanisms, channel bindings, encodings, aborts, refusals. They
    /// are not credential failures and do not use up the client's retries, but are bounded.
    negotiation_failures: u32,
    /// The `from` of the client's stream header, echoed as `to` (RFC 6120 §4.7.2).
    peer_from: Option<String>,
}

impl C2sStream {
    /// A stream on a plain TCP connection (STARTTLS port).
    pub fn new() -> C2sStream {
        C2sStream {
            phase: Phase::AwaitingHeader,
            header_sent: false,
            tls: None,
            user: None,
            bound: None,
            credential_failures: 0,
            negotiation_failures: 0,
            peer_from: None,
        }
    }

    /// A stream on a connection that was TLS from its first byte (XEP-0368 direct TLS).
    pub fn new_direct_tls(bindings: ChannelBindings) -> C2sStream {
        let mut stream = C2sStream::new();
        stream.tls = Some(bindings);
        stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn user(&self) -> Option<&BareJid> {
        self.user.as_ref()
    }

    pub fn bound(&self) -> Option<&FullJid> {
        self.bound.as_ref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.user.is_some()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// True while the stream waits for the runtime (credentials, PLAIN check, bind, TLS):
    /// the runtime must not feed more frames until it has answered.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self.phase,
            Phase::ScramAwaitingCredentials(..)
                | Phase::PlainAwaitingCheck(_)
                | Phase::AwaitingConfirmation(..)
                | Phase::BindPending
                | Phase::AwaitingTls
        )
    }

    /// Handles one frame. Returns the stanza when it must be routed (only once bound, with
    /// its `from` already checked per RFC 6120 §8.1.2.1), and the stream-level elements the
    /// runtime implements: XEP-0198 and XEP-0352 ones once bound, `<resume/>`/`<enable/>`
    /// after authentication.
    pub fn handle_frame<'a>(
        &mut self,
        frame: Frame<'a>,
        config: &StreamConfig,
        entropy: &mut dyn Entropy,
        out: &mut Vec<Action>,
    ) -> Option<Stanza<'a>> {
        debug_assert!(!self.is_waiting(), "runtime fed a frame while the stream waits for an answer");
        if self.is_closed() {
            return None;
        }
        match frame {
            Frame::StreamOpen(header) => {
                self.stream_open(&header, config, entropy, out);
                None
            }
            Frame::StreamClose => {
                // RFC 6120 §4.4: answer the closing tag with ours, then close.
                self.send_header_if_needed(config, entropy, out);
                out.push(Action::Send(b"</stream:stream>".to_vec()));
                out.push(Action::Close);
                self.phase = Phase::Closed;
                None
            }
            Frame::Whitespace => None,
            Frame::Stanza(stanza) => self.stanza(stanza, config, entropy, out),
        }
    }

    /// The framer failed: the stream dies with the matching condition.
    pub fn framer_error(&mut self, error: FramerError, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        self.fail(StreamError::from(error), config, entropy, out);
    }

    /// Closes the stream with an error decided by the runtime (timeouts, conflict, shutdown).
    pub fn fail(&mut self, error: StreamError, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        // RFC 6120 §4.9.1.1: a header goes out first even when the peer's was bad.
        self.send_header_if_needed(config, entropy, out);
        let mut xml = String::with_capacity(160);
        xml.push_str("<stream:error><");
        xml.push_str(error.condition);
        xml.push_str(" xmlns='");
        xml.push_str(STREAM_ERRORS_NAMESPACE);
        xml.push_str("'/>");
        if let Some(text) = &error.text {
            xml.push_str("<text xmlns='");
            xml.push_str(STREAM_ERRORS_NAMESPACE);
            xml.push_str("'>");
            xml.push_str(&escape_text(text));
            xml.push_str("</text>");
        }
        xml.push_str("</stream:error></stream:stream>");
        out.push(Action::Send(xml.into_bytes()));
        out.push(Action::Close);
        self.phase = Phase::Closed;
    }

    /// The TLS handshake after `<proceed/>` completed.
    pub fn tls_established(&mut self, bindings: ChannelBindings) {
        debug_assert!(matches!(self.phase, Phase::AwaitingTls));
        self.tls = Some(bindings);
        self.phase = Phase::AwaitingHeader;
        self.header_sent = false;
    }

    /// The runtime's answer to `LookupCredentials`: `None` when the account does not exist,
    /// in which case fake credentials keep the exchange indistinguishable (RFC 5802 §9).
    pub fn credentials(
        &mut self,
        credentials: Option<ScramCredentials>,
        config: &StreamConfig,
        entropy: &mut dyn Entropy,
        out: &mut Vec<Action>,
    ) {
        let phase = std::mem::replace(&mut self.phase, Phase::Open);
        let Phase::ScramAwaitingCredentials(mut server, user, hash) = phase else {
            debug_assert!(false, "credentials answered while none were asked for");
            self.phase = phase;
            return;
        };
        let credentials = match credentials {
            Some(credentials) => credentials,
            None => ScramCredentials::fake(hash, user.as_str(), &config.server_secret, config.scram_iterations),
        };
        let server_first = server.server_first(&credentials, &entropy.token());
        out.push(Action::Send(sasl_element("challenge", &server_first)));
        self.phase = Phase::ScramAwaitingFinal(server, user);
    }

    /// The runtime's answer to `VerifyPlain`.
    pub fn plain_checked(&mut self, ok: bool, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Open);
        let Phase::PlainAwaitingCheck(user) = phase else {
            debug_assert!(false, "plain_checked answered while nothing was asked");
            self.phase = phase;
            return;
        };
        if ok {
            self.sasl_success(user, None, out);
        } else {
            out.push(Action::AuthFailed(user));
            self.sasl_failure(SaslFailure::NotAuthorized, config, entropy, out);
        }
    }

    /// The runtime's answer to `ConfirmVerdict`: `allowed` is false when the address or the
    /// account was banned while the attempt was in flight; the attempt then ends with
    /// `temporary-auth-failure` whether the proof was right or wrong (no password oracle
    /// behind a ban), and does not count as a wrong password.
    pub fn verdict_confirmed(&mut self, allowed: bool, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let phase = std::mem::replace(&mut self.phase, Phase::Open);
        let Phase::AwaitingConfirmation(user, server_final) = phase else {
            debug_assert!(false, "verdict_confirmed answered while nothing was asked");
            self.phase = phase;
            return;
        };
        match (allowed, server_final) {
            (true, Some(server_final)) => self.sasl_success(user, Some(server_final), out),
            (true, None) => {
                out.push(Action::AuthFailed(user));
                self.sasl_failure(SaslFailure::NotAuthorized, config, entropy, out);
            }
            (false, _) => {
                out.push(Action::AuthAbandoned(user));
                self.sasl_failure(SaslFailure::TemporaryAuthFailure, config, entropy, out);
            }
        }
    }

    /// The runtime refused to start the attempt it was asked to (`LookupCredentials`,
    /// `VerifyPlain`), or to finish it: answered with `failure` (`temporary-auth-failure` for a
    /// throttled one). Nothing was checked, so nothing counts as a wrong password; an attempt
    /// that had started is the runtime's to settle.
    pub fn attempt_refused(&mut self, failure: SaslFailure, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let waiting =
            matches!(self.phase, Phase::ScramAwaitingCredentials(..) | Phase::PlainAwaitingCheck(_) | Phase::AwaitingConfirmation(..));
        debug_assert!(waiting, "attempt_refused while no attempt was pending");
        if !waiting {
            return;
        }
        self.phase = Phase::Open;
        self.sasl_failure(failure, config, entropy, out);
    }

    /// XEP-0198 §5: the runtime resumed a detached session; the stream now carries it.
    pub fn resumed(&mut self, jid: FullJid) {
        debug_assert!(matches!(self.phase, Phase::Open) && self.user.is_some(), "resumed before authentication");
        debug_assert_eq!(self.user.as_ref(), Some(&jid.bare()), "resumed another user's session");
        self.bound = Some(jid);
        self.phase = Phase::Bound;
    }

    /// The runtime's answer to `Bind`: the bound JID, or a stanza error condition
    /// (`conflict`, `resource-constraint`; RFC 6120 §7.6.2).
    pub fn bind_result(&mut self, result: Result<FullJid, &'static str>, id: &str, out: &mut Vec<Action>) {
        debug_assert!(matches!(self.phase, Phase::BindPending));
        match result {
            Ok(jid) => {
                let mut xml = String::with_capacity(160);
                xml.push_str("<iq type='result' id='");
                xml.push_str(&escape_attribute(id));
                xml.push_str("'><bind xmlns='");
                xml.push_str(BIND_NAMESPACE);
                xml.push_str("'><jid>");
                xml.push_str(&escape_text(jid.as_str()));
                xml.push_str("</jid></bind></iq>");
                out.push(Action::Send(xml.into_bytes()));
                self.bound = Some(jid);
                self.phase = Phase::Bound;
            }
            Err(condition) => {
                out.push(Action::Send(error_reply(StanzaKind::Iq, Some(id), None, None, condition)));
                self.phase = Phase::Open;
            }
        }
    }

    fn stream_open(&mut self, header: &StreamOpen<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::AwaitingHeader) {
            // A second header inside an open stream is not XML we can process.
            return self.fail(StreamError::with_text("bad-format", "unexpected stream header"), config, entropy, out);
        }
        self.peer_from = header.from.as_deref().filter(|from| from.len() <= 3071).map(str::to_owned);
        // RFC 6120 §4.9.3.10: wrong stream namespace or content namespace.
        if header.local_name != "stream" || header.namespace != Some(STREAMS_NAMESPACE) {
            return self.fail(
                StreamError::with_text("invalid-namespace", "stream namespace must be http://etherx.jabber.org/streams"),
                config,
                entropy,
                out,
            );
        }
        if header.default_namespace != Some(CLIENT_NAMESPACE) {
            return self.fail(StreamError::with_text("invalid-namespace", "content namespace must be jabber:client"), config, entropy, out);
        }
        // RFC 6120 §4.7.5: we speak 1.0; a missing version means pre-1.0 (§4.9.3.25).
        let major = header.version.as_deref().and_then(|v| v.split('.').next()).and_then(|m| m.parse::<u32>().ok());
        if major != Some(1) {
            return self.fail(StreamError::with_text("unsupported-version", "version='1.0' is required"), config, entropy, out);
        }
        // RFC 6120 §4.7.2 / §4.9.3.6: `to` must name a domain we serve.
        let to_ok = header.to.as_deref().and_then(|to| prepare_domain(to).ok()).is_some_and(|to| to == config.domain);
        if !to_ok {
            return self.fail(StreamError::new("host-unknown"), config, entropy, out);
        }
        self.send_header_if_needed(config, entropy, out);
        out.push(Action::Send(self.features(config)));
        self.phase = Phase::Open;
    }

    fn send_header_if_needed(&mut self, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        if self.header_sent {
            return;
        }
        self.header_sent = true;
        // RFC 6120 §4.7: a fresh id for every stream, including restarts.
        let mut xml = String::with_capacity(256);
        xml.push_str("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='");
        xml.push_str(STREAMS_NAMESPACE);
        xml.push_str("' id='");
        xml.push_str(&escape_attribute(&entropy.token()));
        xml.push_str("' from='");
        xml.push_str(&escape_attribute(&config.domain));
        xml.push('\'');
        if let Some(to) = &self.peer_from {
            xml.push_str(" to='");
            xml.push_str(&escape_attribute(to));
            xml.push('\'');
        }
        xml.push_str(" version='1.0' xml:lang='en'>");
        out.push(Action::Send(xml.into_bytes()));
    }

    /// RFC 6120 §4.3.2: the features on offer at this point of the negotiation.
    fn features(&self, config: &StreamConfig) -> Vec<u8> {
        let mut xml = String::with_capacity(512);
        xml.push_str("<stream:features>");
        if self.user.is_some() {
            // RFC 6120 §7.4 bind, and the RFC 3921 session feature marked optional
            // (draft-cridland-xmpp-session-01) so old clients still send it and new ones skip it.
            xml.push_str("<bind xmlns='");
            xml.push_str(BIND_NAMESPACE);
            xml.push_str("'/><session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>");
            // XEP-0198 §2 (enable after bind, resume instead of bind), RFC 6121 §2.6.1,
            // XEP-0352 §2.
            xml.push_str("<sm xmlns='");
            xml.push_str(SM_NAMESPACE);
            xml.push_str("'/><ver xmlns='");
            xml.push_str(ROSTER_VERSIONING_NAMESPACE);
            xml.push_str("'/><csi xmlns='");
            xml.push_str(CSI_NAMESPACE);
            xml.push_str("'/>");
        } else if self.tls.is_none() {
            // RFC 6120 §5.4.1: STARTTLS, mandatory-to-negotiate by default. When TLS is
            // optional by configuration, SASL (without PLAIN) is offered beside it.
            xml.push_str("<starttls xmlns='");
            xml.push_str(TLS_NAMESPACE);
            xml.push_str("'><required/></starttls>");
        } else {
            xml.push_str("<mechanisms xmlns='");
            xml.push_str(SASL_NAMESPACE);
            xml.push_str("'>");
            for mechanism in self.offered_mechanisms() {
                xml.push_str("<mechanism>");
                xml.push_str(mechanism.name());
                xml.push_str("</mechanism>");
            }
            xml.push_str("</mechanisms>");
            if self.registration_offered(config) {
                // XEP-0077 §4: registration is on offer (only inside TLS, where passwords travel).
                xml.push_str("<register xmlns='");
                xml.push_str(REGISTER_FEATURE_NAMESPACE);
                xml.push_str("'/>");
            }
            if let Some(bindings) = &self.tls {
                // XEP-0440 §2: the channel-binding types we can verify on this connection.
                xml.push_str("<sasl-channel-binding xmlns='");
                xml.push_str(SASL_CB_NAMESPACE);
                xml.push_str("'>");
                if bindings.tls_server_end_point.is_some() {
                    xml.push_str("<channel-binding type='tls-server-end-point'/>");
                }
                if bindings.tls_exporter.is_some() {
                    xml.push_str("<channel-binding type='tls-exporter'/>");
                }
                xml.push_str("</sasl-channel-binding>");
            }
        }
        xml.push_str("</stream:features>");
        xml.into_bytes()
    }

    fn plus_offered(&self) -> bool {
        self.tls.as_ref().is_some_and(|b| b.tls_exporter.is_some() || b.tls_server_end_point.is_some())
    }

    fn offered_mechanisms(&self) -> Vec<Mechanism> {
        let mut mechanisms = Vec::with_capacity(5);
        if self.plus_offered() {
            mechanisms.push(Mechanism::ScramSha256Plus);
            mechanisms.push(Mechanism::ScramSha1Plus);
        }
        mechanisms.push(Mechanism::ScramSha256);
        mechanisms.push(Mechanism::ScramSha1);
        // PLAIN only inside TLS (RFC 4616 §6, RFC 6120 §13.8).
        if self.tls.is_some() {
            mechanisms.push(Mechanism::Plain);
        }
        mechanisms
    }

    fn stanza<'a>(
        &mut self,
        stanza: Stanza<'a>,
        config: &StreamConfig,
        entropy: &mut dyn Entropy,
        out: &mut Vec<Action>,
    ) -> Option<Stanza<'a>> {
        let is_client_stanza = stanza.namespace == CLIENT_NAMESPACE && StanzaKind::from_name(stanza.name).is_some();
        match &self.phase {
            Phase::Bound => {
                if stanza.namespace == SM_NAMESPACE || stanza.namespace == CSI_NAMESPACE {
                    // Stream-level elements the runtime implements (XEP-0198, XEP-0352).
                    return Some(stanza);
                }
                if !is_client_stanza {
                    let error = if StanzaKind::from_name(stanza.name).is_some() {
                        StreamError::new("invalid-namespace")
                    } else {
                        // RFC 6120 §4.9.3.24: a top-level element we do not support.
                        StreamError::new("unsupported-stanza-type")
                    };
                    self.fail(error, config, entropy, out);
                    return None;
                }
                // RFC 6120 §8.1.2.1 / §4.9.3.9: a `from` other than the client's own full or
                // bare JID is a spoofing attempt; we close with <invalid-from/> rather than
                // silently rewrite, so it is visible to the client and in the logs.
                // JIDs compare after RFC 7622 preparation: `Alice@Example.COM` is ours too.
                if let (Some(from), Some(bound)) = (stanza.from.as_deref(), &self.bound) {
                    let ours = |from: &str| from == bound.as_str() || from == bound.bare_str();
                    if !ours(from) && !crate::jid::Jid::parse(from).is_ok_and(|jid| ours(jid.as_str())) {
                        self.fail(StreamError::new("invalid-from"), config, entropy, out);
                        return None;
                    }
                }
                if stanza.name == "iq" {
                    if let Some(text) = iq_violation(&stanza) {
                        // RFC 6120 §8.2.3 and §8.3.3.1: answered here, never routed; an error is
                        // never answered with an error (§8.3.1).
                        if stanza.kind.as_deref() != Some("error") {
                            out.push(Action::Send(iq_bad_request(&stanza, text)));
                        }
                        out.push(Action::StanzaHandled);
                        return None;
                    }
                }
                Some(stanza)
            }
            Phase::Open if self.user.is_some() && stanza.namespace == SM_NAMESPACE => {
                // XEP-0198 §5: <resume/> takes the place of binding; the runtime answers and
                // calls `resumed` (or refuses `<enable/>` before bind, §3).
                Some(stanza)
            }
            _ if is_client_stanza && self.user.is_some() && stanza.name == "iq" => {
                self.bind(&stanza, config, entropy, out);
                None
            }
            Phase::Open if is_client_stanza && self.user.is_none() && self.registration_offered(config) && stanza.name == "iq" => {
                self.registration_iq(&stanza, config, entropy, out);
                None
            }
            Phase::Open
                if is_client_stanza
                    && self.user.is_none()
                    && self.tls.is_some()
                    && stanza.name == "iq"
                    && stanza.element().is_ok_and(|e| e.child("query", REGISTER_NAMESPACE).is_some()) =>
            {
                // XEP-0077 §3.1: "If the host does not support in-band registration, it MUST
                // return a <service-unavailable/> error" — a client that offers to create the
                // account (Pidgin, the peer suite's runner) goes on to log in.
                let id = stanza.id.as_deref();
                out.push(Action::Send(error_reply(StanzaKind::Iq, id, None, None, "service-unavailable")));
                None
            }
            _ if is_client_stanza => {
                // RFC 6120 §4.9.3.12: stanzas before authentication (and, §7.1, before bind).
                self.fail(StreamError::new("not-authorized"), config, entropy, out);
                None
            }
            _ => {
                self.negotiation_element(&stanza, config, entropy, out);
                None
            }
        }
    }

    /// XEP-0077 §3.1 before authentication: the form, or an account creation request. Anything
    /// else before authentication still ends the stream (RFC 6120 §4.9.3.12).
    fn registration_iq(&mut self, stanza: &Stanza<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let id = stanza.id.as_deref().unwrap_or("").to_owned();
        let element = match stanza.element() {
            Ok(element) => element,
            Err(error) => return self.framer_error(error, config, entropy, out),
        };
        let Some(query) = element.child("query", REGISTER_NAMESPACE) else {
            return self.fail(StreamError::new("not-authorized"), config, entropy, out);
        };
        let error = |condition| Action::Send(error_reply(StanzaKind::Iq, Some(&id), None, None, condition));
        match stanza.kind.as_deref() {
            Some("get") => {
                let mut xml = String::with_capacity(256);
                xml.push_str("<iq type='result' id='");
                xml.push_str(&escape_attribute(&id));
                xml.push_str("'><query xmlns='");
                xml.push_str(REGISTER_NAMESPACE);
                xml.push_str("'><instructions>Choose a user name and password.</instructions><username/><password/></query></iq>");
                out.push(Action::Send(xml.into_bytes()));
            }
            Some("set") => {
                if query.child("remove", REGISTER_NAMESPACE).is_some() {
                    // §3.2: cancelling needs an authenticated stream.
                    out.push(error("not-authorized"));
                    return;
                }
                let username = query.child("username", REGISTER_NAMESPACE).map(|e| e.text()).unwrap_or_default();
                let password = query.child("password", REGISTER_NAMESPACE).map(|e| e.text()).unwrap_or_default();
                if username.is_empty() || password.is_empty() {
                    // §3.1: required fields missing.
                    out.push(error("not-acceptable"));
                    return;
                }
                match prepare_local(&username).ok().and_then(|local| BareJid::new(Some(&local), &config.domain).ok()) {
                    Some(user) => out.push(Action::Register { id, user, password }),
                    None => out.push(error("jid-malformed")),
                }
            }
            _ => out.push(error("bad-request")),
        }
    }

    /// XEP-0077: registration is offered when configured, and only once TLS protects the
    /// stream (the password travels in the clear inside it, §9).
    fn registration_offered(&self, config: &StreamConfig) -> bool {
        config.registration && self.tls.is_some()
    }

    fn bind(&mut self, stanza: &Stanza<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Open) {
            return self.fail(StreamError::new("not-authorized"), config, entropy, out);
        }
        let id = stanza.id.as_deref().unwrap_or("").to_owned();
        let element = match stanza.element() {
            Ok(element) => element,
            Err(error) => return self.framer_error(error, config, entropy, out),
        };
        let Some(bind) = element.child("bind", BIND_NAMESPACE).filter(|_| stanza.kind.as_deref() == Some("set")) else {
            // RFC 6120 §7.1: nothing but binding is processed before a resource is bound.
            return self.fail(StreamError::with_text("not-authorized", "bind a resource first"), config, entropy, out);
        };
        let Some(user) = self.user.clone() else {
            return self.fail(StreamError::new("not-authorized"), config, entropy, out);
        };
        let requested = bind.child("resource", BIND_NAMESPACE).map(|r| r.text()).filter(|r| !r.is_empty());
        // RFC 6120 §7.6: a client-submitted resource is prepared; an invalid one is bad-request
        // (§7.7.2.1); none at all means the server generates one (§7.6.1).
        let resource = match requested {
            Some(requested) => match prepare_resource(&requested) {
                Ok(resource) => resource,
                Err(_) => {
                    out.push(Action::Send(error_reply(StanzaKind::Iq, Some(&id), None, None, "bad-request")));
                    return;
                }
            },
            None => entropy.token(),
        };
        match user.with_resource(&resource) {
            Ok(jid) => {
                self.phase = Phase::BindPending;
                out.push(Action::Bind { jid, id });
            }
            Err(_) => out.push(Action::Send(error_reply(StanzaKind::Iq, Some(&id), None, None, "bad-request"))),
        }
    }

    fn negotiation_element(&mut self, stanza: &Stanza<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let namespace: &str = &stanza.namespace;
        if namespace == TLS_NAMESPACE && stanza.name == "starttls" {
            if self.tls.is_some() || self.user.is_some() || !matches!(self.phase, Phase::Open) {
                // RFC 6120 §5.4.2.2: STARTTLS not on offer here; answer <failure/> and close.
                out.push(Action::Send(format!("<failure xmlns='{TLS_NAMESPACE}'/></stream:stream>").into_bytes()));
                out.push(Action::Close);
                self.phase = Phase::Closed;
                return;
            }
            out.push(Action::Send(format!("<proceed xmlns='{TLS_NAMESPACE}'/>").into_bytes()));
            out.push(Action::StartTls);
            self.phase = Phase::AwaitingTls;
            return;
        }
        if self.tls.is_none() && config.tls_required {
            // RFC 6120 §5.3.1: TLS is mandatory-to-negotiate here.
            return self.fail(StreamError::with_text("policy-violation", "STARTTLS is required"), config, entropy, out);
        }
        if namespace != SASL_NAMESPACE || self.user.is_some() {
            return self.fail(StreamError::new("unsupported-stanza-type"), config, entropy, out);
        }
        match stanza.name {
            "auth" => self.sasl_auth(stanza, config, entropy, out),
            "response" => self.sasl_response(stanza, config, entropy, out),
            "abort" => {
                // RFC 6120 §6.4.4.
                self.abandon_attempt(out);
                self.sasl_failure(SaslFailure::Aborted, config, entropy, out);
            }
            _ => self.fail(StreamError::new("unsupported-stanza-type"), config, entropy, out),
        }
    }

    fn sasl_auth(&mut self, stanza: &Stanza<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Open) {
            // A new <auth> in the middle of an exchange: RFC 6120 §6.4 leaves it undefined;
            // treat it as malformed so the exchange restarts cleanly.
            self.abandon_attempt(out);
            return self.sasl_failure(SaslFailure::MalformedRequest, config, entropy, out);
        }
        let element = match stanza.element() {
            Ok(element) => element,
            Err(error) => return self.framer_error(error, config, entropy, out),
        };
        let mechanism = element.attribute("mechanism").and_then(Mechanism::from_name).filter(|m| self.offered_mechanisms().contains(m));
        let Some(mechanism) = mechanism else {
            return self.sasl_failure(SaslFailure::InvalidMechanism, config, entropy, out);
        };
        let data = match decode_sasl_payload(&element.text()) {
            Ok(data) => data,
            Err(failure) => return self.sasl_failure(failure, config, entropy, out),
        };
        match (mechanism, data) {
            // RFC 6120 §6.4.2: no initial response; send an empty challenge.
            (_, None) => {
                out.push(Action::Send(format!("<challenge xmlns='{SASL_NAMESPACE}'/>").into_bytes()));
                self.phase = Phase::ScramAwaitingFirst(mechanism);
            }
            (Mechanism::Plain, Some(data)) => self.plain(&data, config, entropy, out),
            (_, Some(data)) => self.scram_first(mechanism, &data, config, entropy, out),
        }
    }

    fn sasl_response(&mut self, stanza: &Stanza<'_>, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let element = match stanza.element() {
            Ok(element) => element,
            Err(error) => return self.framer_error(error, config, entropy, out),
        };
        let data = match decode_sasl_payload(&element.text()) {
            Ok(data) => data.unwrap_or_default(),
            Err(failure) => {
                self.abandon_attempt(out);
                return self.sasl_failure(failure, config, entropy, out);
            }
        };
        match std::mem::replace(&mut self.phase, Phase::Open) {
            Phase::ScramAwaitingFirst(Mechanism::Plain) => self.plain(&data, config, entropy, out),
            Phase::ScramAwaitingFirst(mechanism) => self.scram_first(mechanism, &data, config, entropy, out),
            Phase::ScramAwaitingFinal(mut server, user) => match server.finish(&data) {
                // RFC 5802 §5.1: the proof is right, or (a wrong proof, binding or nonce) a
                // credential failure; either way the runtime first confirms no ban came
                // meanwhile. A message that does not parse is no verdict.
                Ok(server_final) => {
                    out.push(Action::ConfirmVerdict(user.clone()));
                    self.phase = Phase::AwaitingConfirmation(user, Some(server_final));
                }
                Err(SaslFailure::NotAuthorized) => {
                    out.push(Action::ConfirmVerdict(user.clone()));
                    self.phase = Phase::AwaitingConfirmation(user, None);
                }
                Err(failure) => {
                    out.push(Action::AuthAbandoned(user));
                    self.sasl_failure(failure, config, entropy, out);
                }
            },
            _ => self.sasl_failure(SaslFailure::MalformedRequest, config, entropy, out),
        }
    }

    fn scram_first(&mut self, mechanism: Mechanism, data: &[u8], config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let empty = ChannelBindings::default();
        let bindings = self.tls.as_ref().unwrap_or(&empty);
        let plus_offered = self.plus_offered() && (mechanism.is_plus() || config.reject_channel_binding_downgrade);
        let (server, start) = match ScramServer::start(mechanism, data, bindings, plus_offered) {
            Ok(started) => started,
            Err(failure) => return self.sasl_failure(failure, config, entropy, out),
        };
        let Some(user) = account_jid(&start.username, config) else {
            return self.sasl_failure(SaslFailure::NotAuthorized, config, entropy, out);
        };
        if !authzid_acceptable(start.authzid.as_deref(), &user) {
            return self.sasl_failure(SaslFailure::InvalidAuthzid, config, entropy, out);
        }
        let hash = mechanism.hash().unwrap_or(ScramHash::Sha256);
        out.push(Action::LookupCredentials { user: user.clone(), hash });
        self.phase = Phase::ScramAwaitingCredentials(Box::new(server), user, hash);
    }

    fn plain(&mut self, data: &[u8], config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let request = match crate::sasl::parse_plain(data) {
            Ok(request) => request,
            Err(failure) => return self.sasl_failure(failure, config, entropy, out),
        };
        let Some(user) = account_jid(&request.authcid, config) else {
            return self.sasl_failure(SaslFailure::NotAuthorized, config, entropy, out);
        };
        if !authzid_acceptable(request.authzid.as_deref(), &user) {
            return self.sasl_failure(SaslFailure::InvalidAuthzid, config, entropy, out);
        }
        out.push(Action::VerifyPlain { user: user.clone(), password: request.password });
        self.phase = Phase::PlainAwaitingCheck(user);
    }

    fn sasl_success(&mut self, user: BareJid, additional: Option<Vec<u8>>, out: &mut Vec<Action>) {
        // RFC 6120 §6.4.6: success (with additional data for SCRAM's server signature), then
        // the client restarts the stream without closing the connection.
        let xml = match additional {
            Some(data) => sasl_element("success", &data),
            None => format!("<success xmlns='{SASL_NAMESPACE}'/>").into_bytes(),
        };
        out.push(Action::Send(xml));
        out.push(Action::Authenticated(user.clone()));
        out.push(Action::RestartStream);
        self.user = Some(user);
        self.phase = Phase::AwaitingHeader;
        self.header_sent = false;
    }

    /// An exchange whose credentials were asked for ends before its verdict: the runtime stops
    /// counting it as in flight.
    fn abandon_attempt(&mut self, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.phase, Phase::Open) {
            Phase::ScramAwaitingFinal(_, user) | Phase::AwaitingConfirmation(user, _) | Phase::PlainAwaitingCheck(user) => {
                out.push(Action::AuthAbandoned(user));
            }
            _ => {}
        }
    }

    /// Answers `<failure/>` (RFC 6120 §6.4.5). A wrong password or proof (`not-authorized`
    /// after the credentials were checked, announced by `AuthFailed`) uses up one of the
    /// client's retries; anything else is a negotiation that did not work out — a `-PLUS`
    /// mechanism with a binding type we lack, a malformed message, an abort, a throttled
    /// attempt — which clients legitimately go through on their way to a mechanism that
    /// works, so it has a separate, larger bound and never counts toward a ban.
    fn sasl_failure(&mut self, failure: SaslFailure, config: &StreamConfig, entropy: &mut dyn Entropy, out: &mut Vec<Action>) {
        let credentials = failure == SaslFailure::NotAuthorized && matches!(out.last(), Some(Action::AuthFailed(_)));
        self.phase = Phase::Open;
        out.push(Action::Send(format!("<failure xmlns='{SASL_NAMESPACE}'><{}/></failure>", failure.condition()).into_bytes()));
        if credentials {
            self.credential_failures += 1;
        } else {
            self.negotiation_failures += 1;
        }
        if self.credential_failures >= config.sasl_attempts_max.max(2) {
            self.fail(StreamError::with_text("policy-violation", "too many failed authentication attempts"), config, entropy, out);
        } else if self.negotiation_failures >= SASL_NEGOTIATION_FAILURES_MAX {
            self.fail(StreamError::with_text("policy-violation", "too many failed authentication negotiations"), config, entropy, out);
        }
    }
}

impl Default for C2sStream {
    fn default() -> Self {
        C2sStream::new()
    }
}

impl StreamConfig {
    pub fn new(domain: String, server_secret: Vec<u8>) -> StreamConfig {
        StreamConfig {
            domain,
            tls_required: true,
            server_secret,
            scram_iterations: crate::sasl::SCRAM_ITERATIONS_DEFAULT,
            sasl_attempts_max: SASL_ATTEMPTS_MAX,
            reject_channel_binding_downgrade: false,
            registration: false,
        }
    }
}

/// RFC 6120 §8.2.3 (with §8.1.3 and §8.1.4): an iq has an id and one of the four types; a
/// get or set carries exactly one payload element, a result none or one. Returns what is
/// wrong, if anything.
fn iq_violation(stanza: &Stanza<'_>) -> Option<&'static str> {
    if stanza.id.is_none() {
        return Some("an iq needs an id");
    }
    match (stanza.kind.as_deref(), stanza.children()) {
        (Some("get" | "set"), 1) | (Some("result"), 0 | 1) | (Some("error"), _) => None,
        (Some("get" | "set"), _) => Some("an iq get or set carries exactly one payload element"),
        (Some("result"), _) => Some("an iq result carries at most one payload element"),
        _ => Some("an iq type is get, set, result or error"),
    }
}

/// The `bad-request` error for an iq that breaks §8.2.3: from the entity it was addressed to
/// when that is a JID (RFC 6120 §8.3.1 swaps the addresses), else from the server itself.
fn iq_bad_request(stanza: &Stanza<'_>, text: &str) -> Vec<u8> {
    let to = stanza.to.as_deref().and_then(|to| crate::jid::Jid::parse(to).ok());
    let mut xml = String::with_capacity(256);
    xml.push_str("<iq type='error' id='");
    xml.push_str(&escape_attribute(stanza.id.as_deref().unwrap_or("")));
    xml.push('\'');
    if let Some(to) = &to {
        xml.push_str(" from='");
        xml.push_str(&escape_attribute(to.as_str()));
        xml.push('\'');
    }
    xml.push_str("><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>");
    xml.push_str(&escape_text(text));
    xml.push_str("</text></error></iq>");
    xml.into_bytes()
}

/// RFC 6120 §6.4.2: the payload is base64; "=" is an explicitly empty response and an empty
/// element means "no initial response". Bad base64 is `incorrect-encoding` (§6.5.5).
fn decode_sasl_payload(text: &str) -> Result<Option<Vec<u8>>, SaslFailure> {
    let text = text.trim();
    match text {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        _ => BASE64.decode(text).map(Some).map_err(|_| SaslFailure::IncorrectEncoding),
    }
}

fn sasl_element(name: &str, data: &[u8]) -> Vec<u8> {
    let payload = if data.is_empty() { "=".to_owned() } else { BASE64.encode(data) };
    format!("<{name} xmlns='{SASL_NAMESPACE}'>{payload}</{name}>").into_bytes()
}

/// The account a SASL username names: the simple username is the local part (RFC 6120 §6.3.8).
fn account_jid(username: &str, config: &StreamConfig) -> Option<BareJid> {
    let local = prepare_local(username).ok()?;
    BareJid::new(Some(&local), &config.domain).ok()
}

/// RFC 6120 §6.3.8: an authorization identity, if given, must be the account's own bare JID
/// (we do not support acting as another entity).
fn authzid_acceptable(authzid: Option<&str>, user: &BareJid) -> bool {
    match authzid {
        None | Some("") => true,
        Some(authzid) => crate::jid::Jid::parse(authzid).is_ok_and(|jid| jid.bare() == *user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::{Framer, FramerLimits};
    use crate::sasl::{ClientBinding, ScramClient};

    struct Counter(u32);
    impl Entropy for Counter {
        fn token(&mut self) -> String {
            self.0 += 1;
            format!("tok{}", self.0)
        }
    }

    fn limits() -> FramerLimits {
        FramerLimits { stanza_bytes_max: 8192, depth_max: 16, attributes_max: 16, namespace_declarations_max: 8 }
    }

    fn config() -> StreamConfig {
        let mut config = StreamConfig::new("localhost".into(), b"secret".to_vec());
        config.scram_iterations = 16;
        config
    }

    /// Drives a stream with client bytes; returns the text it sent and the other actions.
    struct Harness {
        framer: Framer,
        stream: C2sStream,
        entropy: Counter,
        config: StreamConfig,
        /// The answer to `ConfirmVerdict` (false: banned while the attempt was in flight).
        confirm: bool,
    }

    impl Harness {
        fn new(stream: C2sStream) -> Harness {
            Harness { framer: Framer::new(limits()), stream, entropy: Counter(0), config: config(), confirm: true }
        }

        fn feed(&mut self, input: &str) -> (String, Vec<Action>) {
            self.framer.push(input.as_bytes());
            let mut sent = String::new();
            let mut others = Vec::new();
            loop {
                if self.stream.is_waiting() || self.stream.is_closed() {
                    break;
                }
                let mut out = Vec::new();
                match self.framer.next_frame() {
                    Ok(Some(frame)) => {
                        if let Some(stanza) = self.stream.handle_frame(frame, &self.config, &mut self.entropy, &mut out) {
                            others.push(Action::Send(stanza.bytes().to_vec()));
                        }
                    }
                    Ok(None) => break,
                    Err(error) => self.stream.framer_error(error, &self.config, &mut self.entropy, &mut out),
                }
                let mut queue: std::collections::VecDeque<Action> = out.into();
                while let Some(action) = queue.pop_front() {
                    match action {
                        Action::Send(bytes) => sent.push_str(&String::from_utf8(bytes).expect("utf8")),
                        Action::RestartStream => self.framer.restart(false),
                        Action::ConfirmVerdict(user) => {
                            // The runtime's ban check, answered as configured.
                            let mut more = Vec::new();
                            self.stream.verdict_confirmed(self.confirm, &self.config, &mut self.entropy, &mut more);
                            others.push(Action::ConfirmVerdict(user));
                            queue.extend(more);
                        }
                        other => others.push(other),
                    }
                }
            }
            (sent, others)
        }
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' \
                          xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    fn bindings() -> ChannelBindings {
        ChannelBindings { tls_exporter: Some(vec![7; 32]), tls_server_end_point: Some(vec![9; 32]) }
    }

    #[test]
    fn header_checks() {
        let cases = [
            (
                "<stream:stream to='example.org' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                "host-unknown",
            ),
            ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", "host-unknown"),
            (
                "<stream:stream to='localhost' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
                "invalid-namespace",
            ),
            ("<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='urn:wrong' version='1.0'>", "invalid-namespace"),
            ("<stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>", "unsupported-version"),
        ];
        for (input, condition) in cases {
            let (sent, actions) = Harness::new(C2sStream::new()).feed(input);
            assert!(sent.starts_with("<?xml version='1.0'?><stream:stream "), "{sent}");
            assert!(sent.contains(&format!("<{condition} xmlns='{STREAM_ERRORS_NAMESPACE}'/>")), "{input} → {sent}");
            assert!(sent.ends_with("</stream:stream>"));
            assert_eq!(actions, vec![Action::Close]);
        }
    }

    #[test]
    fn starttls_is_required_before_anything_else() {
        let mut h = Harness::new(C2sStream::new());
        let (sent, _) = h.feed(HEADER);
        assert!(sent.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"), "{sent}");
        assert!(!sent.contains("mechanisms"));
        let (sent, actions) = h.feed("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>");
        assert!(sent.contains("<policy-violation"), "{sent}");
        assert_eq!(actions, vec![Action::Close]);

        let mut h = Harness::new(C2sStream::new());
        h.feed(HEADER);
        let (sent, _) = h.feed("<message to='a@localhost'><body>hi</body></message>");
        assert!(sent.contains("<not-authorized"), "{sent}");

        let mut h = Harness::new(C2sStream::new());
        h.feed(HEADER);
        let (sent, actions) = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(sent, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(actions, vec![Action::StartTls]);
        assert!(h.stream.is_waiting());
        h.framer.restart(true);
        h.stream.tls_established(bindings());
        let (sent, _) = h.feed(HEADER);
        assert!(sent.contains("<mechanism>SCRAM-SHA-256-PLUS</mechanism>"), "{sent}");
        assert!(sent.contains("<mechanism>PLAIN</mechanism>"));
        assert!(sent.contains("<channel-binding type='tls-exporter'/>"));
        assert!(!sent.contains("starttls"));
    }

    /// Answers a pending credential lookup with the credentials of "pencil", then sends the
    /// client's proof for the challenge; returns what the server sent and asked for.
    fn scram_proof(h: &mut Harness, client: &mut ScramClient, hash: ScramHash) -> (String, Vec<Action>) {
        let mut out = Vec::new();
        let credentials = ScramCredentials::derive(hash, "pencil", b"saltsalt", 16).expect("derive");
        h.stream.credentials(Some(credentials), &h.config, &mut h.entropy, &mut out);
        let Some(Action::Send(challenge)) = out.pop() else { panic!("no challenge") };
        let challenge = String::from_utf8(challenge).expect("utf8");
        let payload = challenge.split('>').nth(1).and_then(|s| s.split('<').next()).expect("payload");
        let final_message = client.handle_server_first(&BASE64.decode(payload).expect("b64")).expect("server first");
        h.feed(&format!("<response xmlns='{SASL_NAMESPACE}'>{}</response>", BASE64.encode(final_message)))
    }

    fn scram_login(binding: ClientBinding, mechanism: &str, password: &str) -> (Harness, String) {
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        let hash = if mechanism.starts_with("SCRAM-SHA-1") { ScramHash::Sha1 } else { ScramHash::Sha256 };
        let mut client = ScramClient::new(hash, "Alice", password, binding, "clientnonce");
        let first = BASE64.encode(client.client_first());
        let (_, actions) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='{mechanism}'>{first}</auth>"));
        let user = BareJid::new(Some("alice"), "localhost").expect("jid");
        assert_eq!(actions, vec![Action::LookupCredentials { user, hash }]);
        let (sent, actions) = scram_proof(&mut h, &mut client, hash);
        let mut all = sent;
        for action in actions {
            all.push_str(&format!("{action:?}"));
        }
        (h, all)
    }

    #[test]
    fn scram_success_then_bind_then_routing_with_from_check() {
        for (binding, mechanism) in [
            (ClientBinding::Use(crate::sasl::ChannelBindingType::TlsExporter, vec![7; 32]), "SCRAM-SHA-256-PLUS"),
            (ClientBinding::Use(crate::sasl::ChannelBindingType::TlsServerEndPoint, vec![9; 32]), "SCRAM-SHA-1-PLUS"),
            (ClientBinding::NotSupported, "SCRAM-SHA-256"),
        ] {
            let (mut h, sent) = scram_login(binding, mechanism, "pencil");
            assert!(sent.contains("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"), "{mechanism}: {sent}");
            assert!(h.stream.is_authenticated());
            let (sent, _) = h.feed(HEADER);
            assert!(sent.contains("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"), "{sent}");
            let (_, actions) =
                h.feed("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>Phone</resource></bind></iq>");
            let [Action::Bind { jid, id }] = &actions[..] else { panic!("{actions:?}") };
            assert_eq!((jid.as_str(), id.as_str()), ("alice@localhost/Phone", "b1"));
            let mut out = Vec::new();
            h.stream.bind_result(Ok(jid.clone()), id, &mut out);
            assert_eq!(
                out,
                vec![Action::Send(b"<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@localhost/Phone</jid></bind></iq>".to_vec())]
            );
            let (_, routed) = h.feed("<message to='bob@localhost' from='alice@localhost'><body>x</body></message>");
            assert_eq!(routed.len(), 1, "own bare JID as from is accepted");
            let (sent, actions) = h.feed("<message to='bob@localhost' from='mallory@localhost/x'><body>x</body></message>");
            assert!(sent.contains("<invalid-from"), "{sent}");
            assert_eq!(actions, vec![Action::Close]);
        }
    }

    #[test]
    fn iq_rules_and_normalised_from_once_bound() {
        let (mut h, _) = scram_login(ClientBinding::NotSupported, "SCRAM-SHA-256", "pencil");
        h.feed(HEADER);
        let (_, actions) =
            h.feed("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>Phone</resource></bind></iq>");
        let [Action::Bind { jid, id }] = &actions[..] else { panic!("{actions:?}") };
        let mut out = Vec::new();
        h.stream.bind_result(Ok(jid.clone()), id, &mut out);
        for bad in [
            "<iq type='get' to='bob@localhost'/>",
            "<iq type='get' id='x' to='bob@localhost'/>",
            "<iq type='set' id='x'><a xmlns='u:a'/><b xmlns='u:b'/></iq>",
            "<iq type='result' id='x'><a xmlns='u:a'/><b xmlns='u:b'/></iq>",
            "<iq type='weird' id='x'><a xmlns='u:a'/></iq>",
        ] {
            let (sent, actions) = h.feed(bad);
            assert!(sent.contains("<bad-request"), "{bad}: {sent}");
            assert_eq!(actions, vec![Action::StanzaHandled], "{bad}: not routed, counted");
        }
        let (sent, _) = h.feed("<iq type='get' id='y' to='bob@localhost/x'/>");
        assert!(sent.starts_with("<iq type='error' id='y' from='bob@localhost/x'>"), "addresses swapped: {sent}");
        let (sent, actions) = h.feed("<iq type='error'/>");
        assert!(sent.is_empty() && actions == vec![Action::StanzaHandled], "an error is never answered: {sent}");
        for fine in ["<iq type='result' id='r'/>", "<iq type='get' id='g'><ping xmlns='urn:xmpp:ping'/></iq>"] {
            let (sent, routed) = h.feed(fine);
            assert!(sent.is_empty() && routed.len() == 1, "{fine}: {sent} {routed:?}");
        }
        let (sent, routed) = h.feed("<message from='ALICE@LocalHost/Phone' to='bob@localhost'><body>x</body></message>");
        assert!(sent.is_empty() && routed.len() == 1, "the bound JID in capitals is the bound JID: {sent}");
        let (sent, _) = h.feed("<message from='alice@localhost/phone' to='bob@localhost'><body>x</body></message>");
        assert!(sent.contains("<invalid-from"), "the resource is case-sensitive: {sent}");
    }

    #[test]
    fn wrong_password_and_retry_limit() {
        let (mut h, sent) = scram_login(ClientBinding::NotSupported, "SCRAM-SHA-256", "wrong");
        assert!(sent.contains("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"), "{sent}");
        assert!(sent.contains("AuthFailed"));
        assert!(!h.stream.is_authenticated());
        let (sent, _) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='PLAIN'>{}</auth>", BASE64.encode(b"\0alice\0bad")));
        assert!(sent.is_empty());
        let mut out = Vec::new();
        h.stream.plain_checked(false, &h.config, &mut h.entropy, &mut out);
        assert!(!h.stream.is_closed(), "two failures are allowed");
        h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='PLAIN'>{}</auth>", BASE64.encode(b"\0alice\0bad")));
        let mut out2 = Vec::new();
        h.stream.plain_checked(false, &h.config, &mut h.entropy, &mut out2);
        let text: String = out
            .iter()
            .chain(&out2)
            .filter_map(|a| match a {
                Action::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect();
        assert!(text.contains("<policy-violation"), "{text}");
        assert!(h.stream.is_closed());
    }

    #[test]
    fn downgrade_and_unknown_mechanism() {
        // 'y' while PLUS was offered is accepted by default (XEP-0440 clients whose binding
        // types differ from ours send it honestly)…
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        let client = ScramClient::new(ScramHash::Sha256, "alice", "pencil", ClientBinding::SupportedNotUsed, "n1");
        let (_, actions) =
            h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='SCRAM-SHA-256'>{}</auth>", BASE64.encode(client.client_first())));
        assert!(matches!(actions[..], [Action::LookupCredentials { .. }]), "{actions:?}");
        // …and refused as a downgrade (RFC 5802 §6) when configured strictly.
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.config.reject_channel_binding_downgrade = true;
        h.feed(HEADER);
        let client = ScramClient::new(ScramHash::Sha256, "alice", "pencil", ClientBinding::SupportedNotUsed, "n1");
        let (sent, _) =
            h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='SCRAM-SHA-256'>{}</auth>", BASE64.encode(client.client_first())));
        assert!(sent.contains("<failure"), "{sent}");
        let (sent, _) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='DIGEST-MD5'>=</auth>"));
        assert!(sent.contains("<invalid-mechanism/>"), "{sent}");
    }

    /// What python3-slixmpp does by default: SCRAM-SHA-256-PLUS and SCRAM-SHA-1-PLUS with
    /// `tls-unique` (which TLS 1.3 lacks), then plain SCRAM-SHA-256. The two misses are
    /// negotiation failures: nothing counts toward a ban and the client keeps its retries.
    #[test]
    fn plus_with_an_unknown_binding_type_is_not_a_credential_failure() {
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] {
            let first = BASE64.encode("p=tls-unique,,n=alice,r=slixnonce");
            let (sent, actions) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='{mechanism}'>{first}</auth>"));
            assert!(sent.contains("<malformed-request/>"), "{mechanism}: {sent}");
            assert!(actions.is_empty(), "no attempt started, nothing to count: {actions:?}");
        }
        // Two wrong passwords still leave the stream open (three retries by default)…
        for _ in 0..2 {
            let mut client = ScramClient::new(ScramHash::Sha256, "alice", "wrong", ClientBinding::NotSupported, "n2");
            let (_, actions) = h
                .feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='SCRAM-SHA-256'>{}</auth>", BASE64.encode(client.client_first())));
            assert!(matches!(actions[..], [Action::LookupCredentials { .. }]), "{actions:?}");
            let (sent, actions) = scram_proof(&mut h, &mut client, ScramHash::Sha256);
            assert!(sent.contains("<not-authorized/>"), "{sent}");
            assert!(
                matches!(&actions[..], [Action::ConfirmVerdict(_), Action::AuthFailed(user)] if user.as_str() == "alice@localhost"),
                "{actions:?}"
            );
        }
        assert!(!h.stream.is_closed(), "two negotiation misses and two wrong passwords: one retry left");
        // …and the right one succeeds.
        let (right, sent) = scram_login(ClientBinding::NotSupported, "SCRAM-SHA-256", "pencil");
        assert!(sent.contains("<success"), "{sent}");
        assert!(right.stream.is_authenticated());
    }

    #[test]
    fn negotiation_failures_are_bounded_separately() {
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        for n in 0..SASL_NEGOTIATION_FAILURES_MAX {
            let (sent, actions) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='X-UNKNOWN'>=</auth>"));
            assert!(sent.contains("<invalid-mechanism/>"), "{sent}");
            assert!(!actions.iter().any(|a| matches!(a, Action::AuthFailed(_))), "{actions:?}");
            assert_eq!(h.stream.is_closed(), n + 1 == SASL_NEGOTIATION_FAILURES_MAX);
        }
    }

    #[test]
    fn an_attempt_ends_with_exactly_one_verdict() {
        // Aborted after server-first: abandoned, not failed.
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        let client = ScramClient::new(ScramHash::Sha256, "alice", "pencil", ClientBinding::NotSupported, "n3");
        h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='SCRAM-SHA-256'>{}</auth>", BASE64.encode(client.client_first())));
        let mut out = Vec::new();
        h.stream.credentials(None, &h.config, &mut h.entropy, &mut out);
        let (sent, actions) = h.feed(&format!("<abort xmlns='{SASL_NAMESPACE}'/>"));
        assert!(sent.contains("<aborted/>"), "{sent}");
        assert!(matches!(&actions[..], [Action::AuthAbandoned(user)] if user.as_str() == "alice@localhost"), "{actions:?}");

        // A ban that came while the proof was in flight (the runtime does not confirm the
        // verdict): the exchange ends the same way whatever the password.
        let banned_exchange = |password: &str, nonce: &str| {
            let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
            h.confirm = false;
            h.feed(HEADER);
            let mut client = ScramClient::new(ScramHash::Sha256, "alice", password, ClientBinding::NotSupported, nonce);
            h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='SCRAM-SHA-256'>{}</auth>", BASE64.encode(client.client_first())));
            let (sent, actions) = scram_proof(&mut h, &mut client, ScramHash::Sha256);
            assert!(matches!(&actions[..], [Action::ConfirmVerdict(_), Action::AuthAbandoned(_)]), "{actions:?}");
            (h, sent)
        };
        // The right password does not get in…
        let (h, sent) = banned_exchange("pencil", "n4");
        assert!(sent.contains("<temporary-auth-failure/>") && !sent.contains("<success"), "{sent}");
        assert!(!h.stream.is_authenticated());
        // …and a wrong proof gets the very same answer: a ban is no password oracle.
        let (_, wrong) = banned_exchange("wrong", "n5");
        assert_eq!(wrong, sent);

        // A throttled attempt is refused before any work, and is no credential failure.
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        let (_, actions) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='PLAIN'>{}</auth>", BASE64.encode(b"\0alice\0pw")));
        assert!(matches!(actions[..], [Action::VerifyPlain { .. }]), "{actions:?}");
        let mut out = Vec::new();
        h.stream.attempt_refused(SaslFailure::TemporaryAuthFailure, &h.config, &mut h.entropy, &mut out);
        assert!(matches!(&out[..], [Action::Send(bytes)] if bytes.ends_with(b"<temporary-auth-failure/></failure>")), "{out:?}");
        assert!(!h.stream.is_waiting());
    }

    #[test]
    fn invalid_authzid_and_bad_base64() {
        let mut h = Harness::new(C2sStream::new_direct_tls(bindings()));
        h.feed(HEADER);
        let (sent, _) =
            h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='PLAIN'>{}</auth>", BASE64.encode(b"bob@localhost\0alice\0pw")));
        assert!(sent.contains("<invalid-authzid/>"), "{sent}");
        let (sent, _) = h.feed(&format!("<auth xmlns='{SASL_NAMESPACE}' mechanism='PLAIN'>!!!</auth>"));
        assert!(sent.contains("<incorrect-encoding/>"), "{sent}");
    }
}
