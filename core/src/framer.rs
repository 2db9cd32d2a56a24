//! The incremental XMPP framer: turns the received bytes of one client stream into frames
//! (stream header, top-level elements, whitespace keepalives, stream close), RFC 6120 §4.
//!
//! This module owns the receive buffer of a connection, the resumable byte scanner that finds
//! frame boundaries, and every check RFC 6120 §11 asks of incoming XML: well-formedness and
//! namespace well-formedness (§11.2), the restricted XML subset (§11.1: no comments, processing
//! instructions, DTDs or entity references beyond the predefined five), UTF-8 only (§11.6) and
//! the size, depth and attribute limits of [`FramerLimits`]. A frame is handed out only after
//! all of it has been checked, as a view borrowing the buffer ([`Stanza`], [`StreamOpen`]).
//!
//! It deliberately does not know what the frames mean: whether a header is acceptable, which
//! stanza is legal in which state and which error to send are the stream layer's business.
//! It does no I/O either: bytes are pushed in, frames are pulled out.
//!
//! Design: one pass per frame. The scanner keeps its lexical state between pushes, so a frame
//! arriving one byte at a time costs O(n), and it jumps over character data and attribute
//! values a word at a time (then with `memchr` for long runs). While scanning it checks
//! syntax, end-tag names, references, duplicate attributes, namespace prefixes and limits,
//! recording the offsets of the top-level element's name and attributes in reused vectors, so
//! a stanza costs no allocation. A complete frame is then checked for UTF-8 and forbidden
//! control characters in one vectorised pass. quick-xml is used only off the hot path: by
//! [`Stanza::element`] and [`parse_element`], which build owned trees for the stanzas the
//! server handles itself, and to read the XML declaration's pseudo-attributes.
//!
//! Deliberate leniency: name characters beyond ASCII are accepted without checking them
//! against the XML name productions (they are still validated as UTF-8).

use std::borrow::Cow;
use std::fmt;

use memchr::{memchr2, memchr3, memmem};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

use crate::xml::{escape_attribute, Element, Node};

/// The namespace of the stream element and of stream-level elements such as
/// `<stream:features/>` and `<stream:error/>` (RFC 6120 §4.8.1).
pub const STREAMS_NAMESPACE: &str = "http://etherx.jabber.org/streams";

/// Limits on what one frame may contain. Every one of them bounds memory or work that a peer
/// controls; exceeding one is a `<policy-violation/>` (RFC 6120 §4.9.3.14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramerLimits {
    /// Maximum bytes of one top-level element, of the stream header, or of the XML
    /// declaration. The receive buffer never holds more than this plus one pushed chunk.
    pub stanza_bytes_max: usize,
    /// Maximum element nesting depth; the top-level element is depth 1.
    pub depth_max: usize,
    /// Maximum attributes on one element, namespace declarations included.
    pub attributes_max: usize,
    /// Maximum `xmlns` / `xmlns:p` declarations on one element.
    pub namespace_declarations_max: usize,
}

/// The framer of one inbound XML stream. See the module documentation.
pub struct Framer {
    limits: FramerLimits,
    /// Received bytes. Everything before `frame_start` is consumed and is dropped lazily, at
    /// the next `push`, so that frames handed out can borrow the buffer.
    buffer: Vec<u8>,
    /// Offset of the first unconsumed byte; while `scanning`, the start of the frame.
    frame_start: usize,
    /// Whether a frame starting at `frame_start` is being scanned.
    scanning: bool,
    phase: Phase,
    scanner: Scanner,
    /// Whether the stream-level whitespace being consumed has already been reported.
    whitespace_run: bool,
    /// The stream header was self-closing, so a `StreamClose` is owed right after it.
    stream_close_pending: bool,
    /// The qualified name of the stream element, which its end tag must repeat.
    stream_qname: String,
    /// Namespace declarations of the stream header as (prefix, URI), `""` for `xmlns`.
    /// They are in scope for every stanza (RFC 6120 §4.8).
    stream_namespaces: Vec<(String, String)>,
    /// The stream was restarted (`restart`): whitespace that ended the previous stream may
    /// precede the new XML declaration.
    restarted: bool,
}

impl Framer {
    /// A framer expecting a stream header (optionally preceded by a UTF-8 byte order mark and
    /// an XML declaration).
    pub fn new(limits: FramerLimits) -> Framer {
        Framer {
            limits,
            buffer: Vec::new(),
            frame_start: 0,
            scanning: false,
            phase: Phase::PROLOG,
            scanner: Scanner::new(),
            whitespace_run: false,
            stream_close_pending: false,
            stream_qname: String::new(),
            stream_namespaces: Vec::new(),
            restarted: false,
        }
    }

    /// Replaces the limits, e.g. with larger ones after authentication. They apply from the
    /// next scanning step on, including to the frame being scanned.
    pub fn set_limits(&mut self, limits: FramerLimits) {
        self.limits = limits;
    }

    /// Appends received bytes. Push at most one read chunk, then drain [`Framer::next_frame`]
    /// until it returns `Ok(None)`: that keeps the buffer within `stanza_bytes_max` plus one
    /// chunk. Bytes pushed after an error are dropped.
    pub fn push(&mut self, data: &[u8]) {
        if matches!(self.phase, Phase::Failed(_)) {
            return;
        }
        // Compaction moves at most the partial frame left after draining, and the frame start
        // then stays at 0 until that frame completes, so every byte is moved at most once.
        if self.frame_start > 0 {
            if self.frame_start >= self.buffer.len() {
                self.buffer.clear();
            } else {
                self.buffer.drain(..self.frame_start);
            }
            self.frame_start = 0;
        }
        self.buffer.extend_from_slice(data);
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. After an error the
    /// stream is dead: the same error is returned again and pushed bytes are dropped.
    // Inlined so that the (large) frame is built in the caller's slot rather than copied.
    #[inline]
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FramerError> {
        if let Phase::Failed(error) = &self.phase {
            return Err(error.clone());
        }
        match self.advance() {
            Ok(Some(found)) => Ok(Some(self.view(found))),
            Ok(None) => Ok(None),
            Err(error) => {
                self.phase = Phase::Failed(error.clone());
                self.scanning = false;
                Err(error)
            }
        }
    }

    /// Expects a new stream header, as after SASL success or TLS negotiation (RFC 6120
    /// §4.3.3); an XML declaration is allowed again before it (RFC 6120 §11.5), even after
    /// whitespace: clients such as go-xmpp end their last element of the old stream with a
    /// line break, which then precedes the new declaration. Bytes already buffered are
    /// kept (a client may pipeline the new header) unless `discard_buffered`: after STARTTLS
    /// the bytes received in the clear must be dropped (RFC 6120 §5.4.3.3).
    pub fn restart(&mut self, discard_buffered: bool) {
        if discard_buffered {
            self.buffer.clear();
            self.frame_start = 0;
        }
        if matches!(self.phase, Phase::Failed(_)) {
            return;
        }
        // A frame scanned only in part is scanned again from its first byte, as prolog.
        self.scanning = false;
        self.phase = Phase::PROLOG;
        self.restarted = true;
        self.whitespace_run = false;
        self.stream_close_pending = false;
        self.stream_qname.clear();
        self.stream_namespaces.clear();
    }

    /// Bytes received and not yet consumed by a returned frame.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() - self.frame_start
    }

    /// Frees the buffer's heap memory when nothing is buffered, for idle connections.
    pub fn release_idle_memory(&mut self) {
        if self.buffered_len() == 0 {
            self.buffer = Vec::new();
            self.frame_start = 0;
            self.scanner.release_memory();
        }
    }
}

impl fmt::Debug for Framer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Framer")
            .field("limits", &self.limits)
            .field("phase", &self.phase)
            .field("buffered_len", &self.buffered_len())
            .field("scanning", &self.scanning)
            .finish_non_exhaustive()
    }
}

/// One unit of the inbound stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The opening stream tag: the first start tag of the stream (RFC 6120 §4.7).
    StreamOpen(StreamOpen<'a>),
    /// A complete top-level element, a child of the stream element.
    Stanza(Stanza<'a>),
    /// The end tag of the stream element (RFC 6120 §4.4).
    StreamClose,
    /// Whitespace between top-level elements, reported once per run, so that the caller can
    /// count it as activity (RFC 6120 §4.6.1 whitespace keepalives).
    Whitespace,
}

/// The stream header as received (RFC 6120 §4.7). The stream layer checks the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOpen<'a> {
    /// The element's prefix: `"stream"` for `<stream:stream>`, `""` if unprefixed.
    pub prefix: &'a str,
    /// The element's local name; `"stream"` is expected.
    pub local_name: &'a str,
    /// The namespace URI that declarations on this tag bind to the element's own prefix
    /// (`http://etherx.jabber.org/streams` expected).
    pub namespace: Option<&'a str>,
    /// The `xmlns='…'` declaration (`jabber:client` expected).
    pub default_namespace: Option<&'a str>,
    pub to: Option<Cow<'a, str>>,
    pub from: Option<Cow<'a, str>>,
    pub version: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    /// The `xml:lang` attribute.
    pub lang: Option<Cow<'a, str>>,
}

/// A complete, checked top-level element, borrowed from the framer's buffer. The attribute
/// values are borrowed unless they contained references or whitespace to normalise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza<'a> {
    /// The local name, after any prefix.
    pub name: &'a str,
    /// The resolved namespace: the element's own declaration for its prefix, else the stream
    /// header's declaration for that prefix, else (unprefixed) the stream's default
    /// namespace, else empty.
    pub namespace: Cow<'a, str>,
    pub to: Option<Cow<'a, str>>,
    pub from: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    /// The `type` attribute.
    pub kind: Option<Cow<'a, str>>,
    bytes: &'a [u8],
    /// Offset just past the element's qualified name.
    name_end: usize,
    /// Offsets of the raw value of the `from` attribute, between its quotes.
    from_value: Option<(usize, usize)>,
    stream_namespaces: &'a [(String, String)],
    /// Indices into `stream_namespaces` of the prefixes the element uses but declares only on
    /// the sender's stream header: a copy sent on another stream must declare them itself.
    inherited: &'a [usize],
    /// Child elements of the top-level element (RFC 6120 §8.2.3 counts an iq's payloads).
    children: usize,
}

impl<'a> Stanza<'a> {
    /// The exact bytes received, from `<` to the final `>`.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The number of child elements of the top-level element.
    pub fn children(&self) -> usize {
        self.children
    }

    /// A copy of the bytes with `from` set to `from` (escaped): the value of an existing
    /// `from` attribute is replaced, otherwise `from='…'` is inserted right after the element
    /// name. This is how the server stamps the sender (RFC 6120 §8.1.2.1). The only other
    /// change: prefixes the element uses but the sender declared on its stream header alone
    /// are declared on the element, so the copy is namespace-well-formed on any stream
    /// (XML Namespaces §5, RFC 6120 §11.2).
    pub fn with_from(&self, from: &str) -> Vec<u8> {
        let value = escape_attribute(from);
        let mut out = Vec::with_capacity(self.bytes.len() + value.len() + 8);
        out.extend_from_slice(&self.bytes[..self.name_end]);
        for (prefix, uri) in self.inherited.iter().filter_map(|&index| self.stream_namespaces.get(index)) {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"='");
            out.extend_from_slice(escape_attribute(uri).as_bytes());
            out.push(b'\'');
        }
        // The offsets were recorded while scanning exactly these bytes, so they lie within
        // them; escape_attribute escapes both quote characters, so either quote style holds.
        match self.from_value {
            Some((start, end)) => {
                out.extend_from_slice(&self.bytes[self.name_end..start]);
                out.extend_from_slice(value.as_bytes());
                out.extend_from_slice(&self.bytes[end..]);
            }
            None => {
                out.extend_from_slice(b" from='");
                out.extend_from_slice(value.as_bytes());
                out.push(b'\'');
                out.extend_from_slice(&self.bytes[self.name_end..]);
            }
        }
        out
    }

    /// The whole element as an owned tree, namespaces resolved with the stream header's
    /// declarations as context. For the stanzas the server handles itself, not for routing.
    pub fn element(&self) -> Result<Element, FramerError> {
        build_element(self.bytes, self.stream_namespaces)
    }
}

/// Parses a stanza's bytes (as routed between shards, already checked by a framer) into an
/// owned tree, in the `jabber:client` default namespace of client streams.
pub fn parse_element(bytes: &[u8]) -> Result<Element, FramerError> {
    build_element(bytes, &[(String::new(), "jabber:client".to_owned())])
}

/// Why the inbound stream cannot go on. Every variant is the peer's fault and maps to one
/// stream error condition (RFC 6120 §4.9.3) through [`FramerError::condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramerError {
    /// Malformed XML, invalid UTF-8 or mismatched tags: `<not-well-formed/>`.
    NotWellFormed(&'static str),
    /// Comments, processing instructions, DTDs or entity references (RFC 6120 §11.1):
    /// `<restricted-xml/>`.
    RestrictedXml(&'static str),
    /// A [`FramerLimits`] limit was exceeded: `<policy-violation/>`.
    PolicyViolation(&'static str),
    /// An encoding other than UTF-8 was declared or detected (RFC 6120 §11.6):
    /// `<unsupported-encoding/>`.
    UnsupportedEncoding,
    /// Well-formed, but not an XMPP stream, e.g. text at stream level: `<bad-format/>`.
    BadFormat(&'static str),
}

impl FramerError {
    /// The defined stream error condition (RFC 6120 §4.9.3) to send.
    pub fn condition(&self) -> &'static str {
        match self {
            FramerError::NotWellFormed(_) => "not-well-formed",
            FramerError::RestrictedXml(_) => "restricted-xml",
            FramerError::PolicyViolation(_) => "policy-violation",
            FramerError::UnsupportedEncoding => "unsupported-encoding",
            FramerError::BadFormat(_) => "bad-format",
        }
    }

    /// A short human-readable description, suitable for the stream error's `<text/>`.
    pub fn text(&self) -> &'static str {
        match self {
            FramerError::NotWellFormed(text)
            | FramerError::RestrictedXml(text)
            | FramerError::PolicyViolation(text)
            | FramerError::BadFormat(text) => text,
            FramerError::UnsupportedEncoding => "only UTF-8 is supported",
        }
    }
}

impl fmt::Display for FramerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.condition(), self.text())
    }
}

impl std::error::Error for FramerError {}

// ---------------------------------------------------------------------------------------------
// Framer internals.

/// The namespace bound to the `xml` prefix by definition (XML Namespaces §3).
const XML_NAMESPACE: &str = "http://www.w3.org/XML/1998/namespace";
/// The UTF-8 encoded byte order mark, allowed before the stream (XML 1.0 §4.3.3).
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Byte patterns that begin a UTF-16 stream (with or without byte order mark), refused with
/// `<unsupported-encoding/>` (RFC 6120 §11.6).
const UTF16_STARTS: [&[u8]; 4] = [b"\xFE\xFF", b"\xFF\xFE", b"\x00<", b"<\x00"];
/// What starts an XML declaration; it must be followed by whitespace.
const DECLARATION_OPEN: &[u8] = b"<?xml";
/// What starts a CDATA section, the only `<!` construct allowed (RFC 6120 §11.1).
const CDATA_OPEN: &[u8] = b"<![CDATA[";

/// Where the stream is, outside any frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Before the stream header. A byte order mark and then an XML declaration are allowed
    /// only as the very first bytes of the stream.
    Prolog { bom_allowed: bool, declaration_allowed: bool },
    /// Between top-level elements.
    Stream,
    /// After the stream's end tag; only whitespace may follow.
    Closed,
    /// An error was returned; it is returned again.
    Failed(FramerError),
}

impl Phase {
    const PROLOG: Phase = Phase::Prolog { bom_allowed: true, declaration_allowed: true };
}

/// A frame found by [`Framer::advance`], as offsets, so that the mutable scanning is done
/// before the view borrowing the buffer is built.
#[derive(Debug, Clone, Copy)]
enum Found {
    Open { start: usize, len: usize },
    Stanza { start: usize, len: usize },
    Close,
    Whitespace,
}

impl Framer {
    /// Consumes bytes until a frame is complete (`Some`) or more bytes are needed (`None`).
    #[inline(never)]
    fn advance(&mut self) -> Result<Option<Found>, FramerError> {
        loop {
            if self.scanning {
                let limit_end = self.frame_start.saturating_add(self.limits.stanza_bytes_max);
                let end = self.buffer.len().min(limit_end);
                // Limits lowered mid-frame can leave the frame already larger than allowed.
                if self.scanner.position > end - self.frame_start {
                    return Err(FramerError::PolicyViolation("frame larger than stanza_bytes_max"));
                }
                let context =
                    ScanContext { limits: &self.limits, stream_qname: &self.stream_qname, stream_namespaces: &self.stream_namespaces };
                let Some(len) = self.scanner.scan(&self.buffer[self.frame_start..end], &context)? else {
                    // A frame that is still incomplete at the limit can only exceed it.
                    if self.buffer.len() > limit_end {
                        return Err(FramerError::PolicyViolation("frame larger than stanza_bytes_max"));
                    }
                    return Ok(None);
                };
                self.scanning = false;
                let start = self.frame_start;
                self.frame_start += len;
                let frame = &self.buffer[start..start + len];
                let brackets = check_characters(frame)?;
                match self.scanner.kind {
                    FrameKind::Declaration => check_declaration(frame)?,
                    FrameKind::Header => {
                        self.open_stream(start, len);
                        return Ok(Some(Found::Open { start, len }));
                    }
                    FrameKind::Stanza => {
                        if brackets {
                            check_character_data(frame)?;
                        }
                        return Ok(Some(Found::Stanza { start, len }));
                    }
                    FrameKind::StreamEnd => {
                        self.phase = Phase::Closed;
                        return Ok(Some(Found::Close));
                    }
                }
                continue;
            }
            let rest = &self.buffer[self.frame_start..];
            match self.phase {
                Phase::Failed(ref error) => return Err(error.clone()),
                Phase::Prolog { bom_allowed: true, declaration_allowed } => {
                    if UTF16_STARTS.iter().any(|start| rest.starts_with(start)) {
                        return Err(FramerError::UnsupportedEncoding);
                    }
                    let undecided = rest.len() < UTF8_BOM.len()
                        && (UTF8_BOM.starts_with(rest) || UTF16_STARTS.iter().any(|start| start.starts_with(rest)));
                    if undecided {
                        return Ok(None);
                    }
                    if rest.starts_with(UTF8_BOM) {
                        self.frame_start += UTF8_BOM.len();
                    }
                    self.phase = Phase::Prolog { bom_allowed: false, declaration_allowed };
                }
                Phase::Prolog { bom_allowed: false, declaration_allowed } => {
                    let Some(&byte) = rest.first() else {
                        return Ok(None);
                    };
                    if is_whitespace(byte) {
                        self.frame_start += whitespace_len(rest);
                        // XML 1.0 §2.8: the declaration comes first in a document; after a
                        // restart the whitespace is the old stream's tail, not this one's.
                        self.phase = Phase::Prolog { bom_allowed: false, declaration_allowed: declaration_allowed && self.restarted };
                        continue;
                    }
                    if byte != b'<' {
                        return match text_error(rest, "text before the stream header") {
                            Some(FramerError::BadFormat(text)) => Err(FramerError::NotWellFormed(text)),
                            Some(error) => Err(error),
                            None => Ok(None),
                        };
                    }
                    // `<?` may be the XML declaration; decide only on enough bytes, so that
                    // the outcome does not depend on how the bytes were chunked.
                    if rest.len() < 2 {
                        return Ok(None);
                    }
                    self.phase = Phase::Prolog { bom_allowed: false, declaration_allowed: false };
                    if rest[1] != b'?' {
                        self.begin(FrameKind::Header, Lexical::Markup, 1);
                        continue;
                    }
                    if !declaration_allowed {
                        return Err(FramerError::RestrictedXml("processing instructions are not allowed"));
                    }
                    let Some(&after) = rest.get(DECLARATION_OPEN.len()) else {
                        if DECLARATION_OPEN.starts_with(rest) {
                            // Not decided yet: keep the declaration allowed.
                            self.phase = Phase::Prolog { bom_allowed: false, declaration_allowed };
                            return Ok(None);
                        }
                        return Err(FramerError::RestrictedXml("processing instructions are not allowed"));
                    };
                    if !rest.starts_with(DECLARATION_OPEN) || !is_whitespace(after) {
                        return Err(FramerError::RestrictedXml("processing instructions are not allowed"));
                    }
                    self.begin(FrameKind::Declaration, Lexical::Declaration, DECLARATION_OPEN.len());
                }
                Phase::Stream => {
                    if self.stream_close_pending {
                        self.stream_close_pending = false;
                        self.phase = Phase::Closed;
                        return Ok(Some(Found::Close));
                    }
                    let Some(&byte) = rest.first() else {
                        return Ok(None);
                    };
                    if is_whitespace(byte) {
                        self.frame_start += whitespace_len(rest);
                        // Reported when the run starts, so that a lone keepalive is seen at
                        // once and the frames do not depend on how the run was chunked.
                        if !self.whitespace_run {
                            self.whitespace_run = true;
                            return Ok(Some(Found::Whitespace));
                        }
                        continue;
                    }
                    self.whitespace_run = false;
                    if byte != b'<' {
                        return match text_error(rest, "text at stream level") {
                            Some(error) => Err(error),
                            None => Ok(None),
                        };
                    }
                    self.begin(FrameKind::Stanza, Lexical::Markup, 1);
                }
                Phase::Closed => {
                    self.frame_start += whitespace_len(rest);
                    if self.frame_start < self.buffer.len() {
                        return Err(FramerError::NotWellFormed("content after the stream's end tag"));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Starts scanning a frame at `frame_start`, `position` bytes into it.
    fn begin(&mut self, kind: FrameKind, lexical: Lexical, position: usize) {
        self.scanner.begin(kind, lexical, position);
        self.scanning = true;
    }

    /// Records what later frames need from the stream header just scanned.
    fn open_stream(&mut self, start: usize, len: usize) {
        let bytes = &self.buffer[start..start + len];
        let header = &self.scanner.top;
        let frame = start_tag_text(bytes, header);
        self.stream_qname.clear();
        self.stream_qname.push_str(header.name.text(frame));
        self.stream_namespaces.clear();
        for attribute in &header.attributes {
            if let Some(prefix) = declared_prefix(attribute.name.of(bytes)) {
                let uri = attribute_value(frame, attribute).into_owned();
                self.stream_namespaces.push((text(prefix).to_owned(), uri));
            }
        }
        self.stream_close_pending = self.scanner.header_empty;
        self.whitespace_run = false;
        self.phase = Phase::Stream;
    }

    /// Builds the view of a frame found by `advance`.
    #[inline]
    fn view(&self, found: Found) -> Frame<'_> {
        match found {
            Found::Open { start, len } => Frame::StreamOpen(self.stream_open(&self.buffer[start..start + len])),
            Found::Stanza { start, len } => Frame::Stanza(self.stanza(&self.buffer[start..start + len])),
            Found::Close => Frame::StreamClose,
            Found::Whitespace => Frame::Whitespace,
        }
    }

    fn stream_open<'a>(&'a self, bytes: &'a [u8]) -> StreamOpen<'a> {
        let header = &self.scanner.top;
        let frame = start_tag_text(bytes, header);
        let (prefix, local_name) = split_name(frame, header);
        let mut open = StreamOpen {
            prefix,
            local_name,
            namespace: self.stream_namespace(prefix),
            default_namespace: self.stream_namespace(""),
            to: None,
            from: None,
            version: None,
            id: None,
            lang: None,
        };
        for attribute in &header.attributes {
            let slot = match attribute.name.of(frame.as_bytes()) {
                b"to" => &mut open.to,
                b"from" => &mut open.from,
                b"version" => &mut open.version,
                b"id" => &mut open.id,
                b"xml:lang" => &mut open.lang,
                _ => continue,
            };
            *slot = Some(attribute_value(frame, attribute));
        }
        open
    }

    fn stanza<'a>(&'a self, bytes: &'a [u8]) -> Stanza<'a> {
        let top = &self.scanner.top;
        let frame = start_tag_text(bytes, top);
        let (prefix, name) = split_name(frame, top);
        let mut stanza = Stanza {
            name,
            namespace: Cow::Borrowed(""),
            to: None,
            from: None,
            id: None,
            kind: None,
            bytes,
            name_end: top.name.end,
            from_value: None,
            stream_namespaces: &self.stream_namespaces,
            inherited: &self.scanner.inherited,
            children: self.scanner.children,
        };
        let mut own_namespace = None;
        for attribute in &top.attributes {
            let key = attribute.name.of(bytes);
            let slot = match key {
                b"to" => &mut stanza.to,
                b"from" => {
                    stanza.from_value = Some((attribute.value.start, attribute.value.end));
                    &mut stanza.from
                }
                b"id" => &mut stanza.id,
                b"type" => &mut stanza.kind,
                _ if declared_prefix(key).is_some_and(|declared| same_bytes(declared, prefix.as_bytes())) => &mut own_namespace,
                _ => continue,
            };
            *slot = Some(attribute_value(frame, attribute));
        }
        stanza.namespace = match own_namespace {
            Some(namespace) => namespace,
            None => Cow::Borrowed(self.stream_namespace(prefix).unwrap_or_default()),
        };
        stanza
    }

    /// The namespace the stream header binds to `prefix` (`""`: the default namespace).
    fn stream_namespace(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NAMESPACE);
        }
        self.stream_namespaces.iter().find(|(declared, _)| same_bytes(declared.as_bytes(), prefix.as_bytes())).map(|(_, uri)| uri.as_str())
    }
}

/// What the frame being scanned is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// The XML declaration before the stream header.
    Declaration,
    /// The stream header's start tag.
    Header,
    /// A top-level element; also any stream-level markup until its second byte is read.
    Stanza,
    /// The stream's end tag.
    StreamEnd,
}

/// The scanner's lexical state: what the next byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexical {
    /// Character data inside an element.
    Content,
    /// After `&`, up to `;`, in content or in an attribute value.
    Reference,
    /// After `<`: the next bytes decide between start tag, end tag and `<!`/`<?` constructs.
    Markup,
    /// In the qualified name of a start tag.
    StartName,
    /// In a start tag, between attributes.
    TagSpace,
    /// In an attribute name.
    AttributeName,
    /// After an attribute name, before `=`.
    AttributeEquals,
    /// After `=`, before the opening quote.
    AttributeQuote,
    /// Inside a quoted attribute value.
    AttributeValue,
    /// After `/` in a start tag; `>` must follow.
    EmptyElementEnd,
    /// In the name of an end tag.
    EndName,
    /// After the name of an end tag, before `>`.
    EndSpace,
    /// Inside a CDATA section, up to `]]>`.
    Cdata,
    /// Inside the XML declaration, up to `?>`.
    Declaration,
}

/// A range of a frame's bytes, as offsets from the frame's first byte.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn of<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.start..self.end]
    }

    /// The span of a frame already converted to text. Spans start and end next to ASCII
    /// delimiters, hence on character boundaries; the empty string is only a defensive
    /// fallback that keeps the framer panic-free.
    fn text<'a>(&self, frame: &'a str) -> &'a str {
        frame.get(self.start..self.end).unwrap_or_default()
    }
}

/// An attribute of a start tag, as spans.
#[derive(Debug, Clone, Copy)]
struct AttributeSpan {
    name: Span,
    /// Offset of the colon in a prefixed name.
    colon: Option<usize>,
    /// The raw value, between the quotes.
    value: Span,
    /// The value contains references, tabs or line ends, so it must be normalised
    /// (XML 1.0 §3.3.3) rather than borrowed.
    normalize: bool,
}

/// What is known about a start tag being scanned (or the frame's top-level one).
#[derive(Debug, Default)]
struct Tag {
    name: Span,
    /// Offset just past the tag's `>`.
    end: usize,
    colon: Option<usize>,
    /// Bounded by `attributes_max`.
    attributes: Vec<AttributeSpan>,
    namespace_declarations: usize,
    /// Whitespace was read since the name or the last value (XML 1.0 §3.1 requires it
    /// between attributes).
    had_space: bool,
}

impl Tag {
    fn reset(&mut self) {
        self.attributes.clear();
        self.colon = None;
        self.namespace_declarations = 0;
        self.had_space = false;
    }
}

/// A namespace prefix declared by an element open in the frame being scanned.
#[derive(Debug, Clone, Copy)]
struct Declared {
    prefix: Span,
    depth: usize,
}

/// What the scanner needs to know about the stream.
struct ScanContext<'a> {
    limits: &'a FramerLimits,
    stream_qname: &'a str,
    stream_namespaces: &'a [(String, String)],
}

/// The resumable scanner of one frame. Its vectors are reused from frame to frame.
#[derive(Debug)]
struct Scanner {
    kind: FrameKind,
    lexical: Lexical,
    /// Next byte to read, from the frame's start.
    position: usize,
    /// Elements open in the frame.
    depth: usize,
    /// Qualified names of the open elements, for end-tag matching. Bounded by `depth_max`.
    open: Vec<Span>,
    /// Prefixes declared by open elements, innermost last. Bounded by `depth_max` times
    /// `namespace_declarations_max`.
    scope: Vec<Declared>,
    /// The start tag being scanned.
    tag: Tag,
    /// The frame's top-level start tag (the stream header for a header frame).
    top: Tag,
    /// Stream header declarations (indices) the frame relies on; bounded by their number.
    inherited: Vec<usize>,
    /// Child elements of the frame's top-level element.
    children: usize,
    /// Whether the header frame was a self-closing tag.
    header_empty: bool,
    /// Start of the markup, name or reference being read.
    token_start: usize,
    attribute_name: Span,
    attribute_colon: Option<usize>,
    value_start: usize,
    quote: u8,
    value_normalize: bool,
    reference_in_attribute: bool,
}

impl Scanner {
    fn new() -> Scanner {
        Scanner {
            kind: FrameKind::Stanza,
            lexical: Lexical::Markup,
            position: 0,
            depth: 0,
            open: Vec::new(),
            scope: Vec::new(),
            tag: Tag::default(),
            top: Tag::default(),
            inherited: Vec::new(),
            children: 0,
            header_empty: false,
            token_start: 0,
            attribute_name: Span::default(),
            attribute_colon: None,
            value_start: 0,
            quote: b'\'',
            value_normalize: false,
            reference_in_attribute: false,
        }
    }

    fn begin(&mut self, kind: FrameKind, lexical: Lexical, position: usize) {
        self.kind = kind;
        self.lexical = lexical;
        self.position = position;
        self.depth = 0;
        self.open.clear();
        self.scope.clear();
        self.inherited.clear();
        self.children = 0;
        self.token_start = 0;
        self.header_empty = false;
    }

    fn release_memory(&mut self) {
        self.open = Vec::new();
        self.scope = Vec::new();
        self.tag = Tag::default();
        self.top = Tag::default();
        self.inherited = Vec::new();
    }

    /// Scans `frame` (the bytes received so far from the frame's start, cut at the size
    /// limit) from where the last call stopped. Returns the frame's length once complete.
    fn scan(&mut self, frame: &[u8], context: &ScanContext<'_>) -> Result<Option<usize>, FramerError> {
        let mut position = self.position;
        // A local copy, so that the compiler can turn transitions to a known state into
        // direct jumps instead of going through the dispatch each time.
        let mut lexical = self.lexical;
        let complete = loop {
            match lexical {
                Lexical::Content => match find2(b'<', b'&', &frame[position..]) {
                    None => {
                        position = frame.len();
                        break None;
                    }
                    Some(offset) => {
                        position += offset;
                        self.token_start = position;
                        if frame[position] == b'<' {
                            lexical = Lexical::Markup;
                        } else {
                            self.reference_in_attribute = false;
                            lexical = Lexical::Reference;
                        }
                        position += 1;
                    }
                },
                Lexical::Markup => {
                    let Some(&byte) = frame.get(position) else {
                        break None;
                    };
                    match byte {
                        b'/' => {
                            self.start_end_tag()?;
                            position += 1;
                            self.token_start = position;
                            lexical = Lexical::EndName;
                        }
                        b'!' => {
                            // Anything but a CDATA section is a comment or a DTD construct,
                            // refused before it is read any further (RFC 6120 §11.1).
                            let markup = &frame[self.token_start..];
                            let compared = markup.len().min(CDATA_OPEN.len());
                            if markup[..compared] != CDATA_OPEN[..compared] {
                                return Err(if markup.get(2) == Some(&b'-') {
                                    FramerError::RestrictedXml("comments are not allowed")
                                } else {
                                    FramerError::RestrictedXml("DTDs and markup declarations are not allowed")
                                });
                            }
                            if compared < CDATA_OPEN.len() {
                                break None;
                            }
                            self.start_cdata()?;
                            position = self.token_start + CDATA_OPEN.len();
                            lexical = Lexical::Cdata;
                        }
                        b'?' => {
                            return Err(FramerError::RestrictedXml("processing instructions are not allowed"));
                        }
                        _ if is_name_start(byte) => {
                            if self.kind == FrameKind::Stanza && self.depth >= context.limits.depth_max {
                                return Err(FramerError::PolicyViolation("elements nested deeper than depth_max"));
                            }
                            self.tag.reset();
                            self.token_start = position;
                            position += 1;
                            lexical = Lexical::StartName;
                        }
                        _ => return Err(FramerError::NotWellFormed("'<' not followed by markup")),
                    }
                }
                Lexical::StartName => {
                    position = skip_name(frame, position);
                    if position == frame.len() {
                        break None;
                    }
                    let name = Span { start: self.token_start, end: position };
                    let colon = qname_colon(frame, name)?;
                    if colon.is_some_and(|colon| &frame[name.start..colon] == b"xmlns") {
                        return Err(FramerError::NotWellFormed("an element cannot have the xmlns prefix"));
                    }
                    self.tag.name = name;
                    self.tag.colon = colon;
                    lexical = Lexical::TagSpace;
                }
                Lexical::TagSpace => {
                    let Some(&byte) = frame.get(position) else {
                        break None;
                    };
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => {
                            self.tag.had_space = true;
                            position += 1;
                        }
                        b'>' => {
                            position += 1;
                            if self.finish_start_tag(frame, context, position, false)? {
                                break Some(position);
                            }
                            lexical = Lexical::Content;
                        }
                        b'/' => {
                            position += 1;
                            lexical = Lexical::EmptyElementEnd;
                        }
                        _ if is_name_start(byte) => {
                            if !self.tag.had_space {
                                return Err(FramerError::NotWellFormed("attributes must be separated by whitespace"));
                            }
                            self.token_start = position;
                            position = skip_name(frame, position + 1);
                            if position == frame.len() {
                                lexical = Lexical::AttributeName;
                                break None;
                            }
                            let name = Span { start: self.token_start, end: position };
                            self.start_attribute(frame, name, context)?;
                            // The usual `name='value'` goes straight to the value.
                            match (frame.get(position), frame.get(position + 1)) {
                                (Some(b'='), Some(&quote @ (b'\'' | b'"'))) => {
                                    self.quote = quote;
                                    position += 2;
                                    self.value_start = position;
                                    self.value_normalize = false;
                                    lexical = Lexical::AttributeValue;
                                }
                                _ => lexical = Lexical::AttributeEquals,
                            }
                        }
                        _ => {
                            return Err(FramerError::NotWellFormed("unexpected character in a start tag"));
                        }
                    }
                }
                Lexical::AttributeName => {
                    position = skip_name(frame, position);
                    if position == frame.len() {
                        break None;
                    }
                    self.start_attribute(frame, Span { start: self.token_start, end: position }, context)?;
                    lexical = Lexical::AttributeEquals;
                }
                Lexical::AttributeEquals => {
                    let Some(&byte) = frame.get(position) else {
                        break None;
                    };
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => position += 1,
                        b'=' => {
                            position += 1;
                            lexical = Lexical::AttributeQuote;
                        }
                        _ => return Err(FramerError::NotWellFormed("attribute without a value")),
                    }
                }
                Lexical::AttributeQuote => {
                    let Some(&byte) = frame.get(position) else {
                        break None;
                    };
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => position += 1,
                        b'\'' | b'"' => {
                            self.quote = byte;
                            position += 1;
                            self.value_start = position;
                            self.value_normalize = false;
                            lexical = Lexical::AttributeValue;
                        }
                        _ => {
                            return Err(FramerError::NotWellFormed("attribute value not quoted"));
                        }
                    }
                }
                Lexical::AttributeValue => {
                    let (stop, whitespace) = find_value_end(self.quote, &frame[position..]);
                    self.value_normalize |= whitespace;
                    match stop {
                        None => {
                            position = frame.len();
                            break None;
                        }
                        Some(offset) => {
                            position += offset;
                            match frame[position] {
                                b'<' => {
                                    return Err(FramerError::NotWellFormed("'<' in an attribute value"));
                                }
                                b'&' => {
                                    self.token_start = position;
                                    self.reference_in_attribute = true;
                                    self.value_normalize = true;
                                    lexical = Lexical::Reference;
                                }
                                _ => {
                                    let value = Span { start: self.value_start, end: position };
                                    self.finish_attribute(frame, value)?;
                                    self.tag.had_space = false;
                                    lexical = Lexical::TagSpace;
                                }
                            }
                            position += 1;
                        }
                    }
                }
                Lexical::Reference => {
                    let unread = &frame[position..];
                    let Some(offset) = unread.iter().position(|&byte| !(is_name_char(byte) || byte == b'#')) else {
                        position = frame.len();
                        break None;
                    };
                    position += offset;
                    if frame[position] != b';' {
                        return Err(FramerError::NotWellFormed("'&' not part of a reference"));
                    }
                    reference_char(&frame[self.token_start + 1..position])?;
                    position += 1;
                    lexical = if self.reference_in_attribute { Lexical::AttributeValue } else { Lexical::Content };
                }
                Lexical::EmptyElementEnd => match frame.get(position) {
                    None => break None,
                    Some(b'>') => {
                        position += 1;
                        if self.finish_start_tag(frame, context, position, true)? {
                            break Some(position);
                        }
                        lexical = Lexical::Content;
                    }
                    Some(_) => {
                        return Err(FramerError::NotWellFormed("'/' not followed by '>' in a tag"));
                    }
                },
                Lexical::EndName => {
                    position = skip_name(frame, position);
                    if position == frame.len() {
                        break None;
                    }
                    let name = &frame[self.token_start..position];
                    let expected = match (self.kind, self.open.last()) {
                        (FrameKind::StreamEnd, _) => context.stream_qname.as_bytes(),
                        (_, Some(open)) => open.of(frame),
                        (_, None) => b"",
                    };
                    if name.is_empty() || !same_bytes(name, expected) {
                        return Err(FramerError::NotWellFormed("end tag does not match start tag"));
                    }
                    lexical = Lexical::EndSpace;
                }
                Lexical::EndSpace => {
                    let Some(&byte) = frame.get(position) else {
                        break None;
                    };
                    match byte {
                        b' ' | b'\t' | b'\n' | b'\r' => position += 1,
                        b'>' => {
                            position += 1;
                            if self.close_element() {
                                break Some(position);
                            }
                            lexical = Lexical::Content;
                        }
                        _ => {
                            return Err(FramerError::NotWellFormed("unexpected character in an end tag"));
                        }
                    }
                }
                Lexical::Cdata => match memmem::find(&frame[position..], b"]]>") {
                    Some(offset) => {
                        position += offset + 3;
                        lexical = Lexical::Content;
                    }
                    None => {
                        // Keep the last two bytes: they may begin the terminator.
                        position = position.max(frame.len().saturating_sub(2));
                        break None;
                    }
                },
                Lexical::Declaration => match memmem::find(&frame[position..], b"?>") {
                    Some(offset) => break Some(position + offset + 2),
                    None => {
                        position = position.max(frame.len().saturating_sub(1));
                        break None;
                    }
                },
            }
        };
        self.position = position;
        self.lexical = lexical;
        Ok(complete)
    }

    /// An end tag starts (`</`): at stream level it is the stream's end tag.
    fn start_end_tag(&mut self) -> Result<(), FramerError> {
        match self.kind {
            FrameKind::Header => Err(FramerError::NotWellFormed("end tag before the stream header")),
            FrameKind::Stanza if self.depth == 0 => {
                self.kind = FrameKind::StreamEnd;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A CDATA section starts: character data, allowed only inside an element.
    fn start_cdata(&self) -> Result<(), FramerError> {
        match self.kind {
            FrameKind::Header => Err(FramerError::NotWellFormed("character data before the stream header")),
            _ if self.depth == 0 => Err(FramerError::BadFormat("text at stream level")),
            _ => Ok(()),
        }
    }

    /// An attribute name was read: checks it and the per-element limits.
    #[inline(always)]
    fn start_attribute(&mut self, frame: &[u8], name: Span, context: &ScanContext<'_>) -> Result<(), FramerError> {
        let limits = context.limits;
        let colon = qname_colon(frame, name)?;
        if self.tag.attributes.len() >= limits.attributes_max {
            return Err(FramerError::PolicyViolation("more attributes than attributes_max"));
        }
        let bytes = name.of(frame);
        if declared_prefix(bytes).is_some() {
            if self.tag.namespace_declarations >= limits.namespace_declarations_max {
                return Err(FramerError::PolicyViolation("more namespace declarations than namespace_declarations_max"));
            }
            self.tag.namespace_declarations += 1;
        }
        // Quadratic in the attribute count, which attributes_max bounds; it is a handful for
        // real stanzas, where this beats hashing.
        let duplicate = self.tag.attributes.iter().any(|attribute| same_bytes(attribute.name.of(frame), bytes));
        if duplicate {
            return Err(FramerError::NotWellFormed("duplicate attribute"));
        }
        self.attribute_name = name;
        self.attribute_colon = colon;
        Ok(())
    }

    /// An attribute value was read: records the attribute and any namespace declaration.
    #[inline(always)]
    fn finish_attribute(&mut self, frame: &[u8], value: Span) -> Result<(), FramerError> {
        let name = self.attribute_name;
        if let Some(colon) = self.attribute_colon {
            if &frame[name.start..colon] == b"xmlns" {
                // XML Namespaces §3: `xmlns` cannot be declared, `xml` only to its own URI,
                // and a prefix cannot be undeclared (XML Namespaces 1.0).
                let prefix = Span { start: colon + 1, end: name.end };
                match prefix.of(frame) {
                    b"xmlns" => {
                        return Err(FramerError::NotWellFormed("the xmlns prefix is reserved"));
                    }
                    b"xml" => {
                        if value.of(frame) != XML_NAMESPACE.as_bytes() {
                            return Err(FramerError::NotWellFormed("the xml prefix is reserved"));
                        }
                    }
                    _ if value.start == value.end => {
                        return Err(FramerError::NotWellFormed("a namespace prefix cannot be undeclared"));
                    }
                    _ => self.scope.push(Declared { prefix, depth: self.depth + 1 }),
                }
            }
        }
        self.tag.attributes.push(AttributeSpan { name, colon: self.attribute_colon, value, normalize: self.value_normalize });
        Ok(())
    }

    /// A start tag ended (`>` or `/>`). Returns whether it completed the frame; if not,
    /// character data follows.
    #[inline(always)]
    fn finish_start_tag(&mut self, frame: &[u8], context: &ScanContext<'_>, end: usize, empty: bool) -> Result<bool, FramerError> {
        self.tag.end = end;
        // XML Namespaces §5: every prefix used must be declared (RFC 6120 §11.2).
        if let Some(colon) = self.tag.colon {
            self.bind_prefix(frame, self.tag.name.start, colon, context)?;
        }
        for index in 0..self.tag.attributes.len() {
            let attribute = self.tag.attributes[index];
            if let Some(colon) = attribute.colon {
                if &frame[attribute.name.start..colon] != b"xmlns" {
                    self.bind_prefix(frame, attribute.name.start, colon, context)?;
                }
            }
        }
        let name = self.tag.name;
        let element_depth = self.depth + 1;
        if element_depth == 2 {
            self.children += 1;
        }
        if self.depth == 0 {
            // The top-level tag is kept for the frame's view; swapping keeps both
            // allocations for reuse.
            std::mem::swap(&mut self.tag, &mut self.top);
        }
        if self.kind == FrameKind::Header {
            self.header_empty = empty;
            return Ok(true);
        }
        if empty {
            self.pop_scope(element_depth);
            if self.depth == 0 {
                return Ok(true);
            }
        } else {
            self.open.push(name);
            self.depth = element_depth;
        }
        Ok(false)
    }

    /// An end tag ended. Returns whether it completed the frame; if not, character data
    /// follows.
    fn close_element(&mut self) -> bool {
        if self.kind == FrameKind::StreamEnd {
            return true;
        }
        self.open.pop();
        self.pop_scope(self.depth);
        self.depth = self.depth.saturating_sub(1);
        self.depth == 0
    }

    /// Drops the declarations of elements at `depth` and deeper.
    fn pop_scope(&mut self, depth: usize) {
        while self.scope.last().is_some_and(|declared| declared.depth >= depth) {
            self.scope.pop();
        }
    }

    /// Checks that the prefix at `frame[start..colon]` is declared: by the frame itself, by
    /// definition (`xml`), or by the stream header, which the frame then relies on.
    fn bind_prefix(&mut self, frame: &[u8], start: usize, colon: usize, context: &ScanContext<'_>) -> Result<(), FramerError> {
        let prefix = &frame[start..colon];
        if prefix == b"xml" || self.scope.iter().rev().any(|declared| same_bytes(declared.prefix.of(frame), prefix)) {
            return Ok(());
        }
        let header =
            context.stream_namespaces.iter().position(|(declared, _)| !declared.is_empty() && same_bytes(declared.as_bytes(), prefix));
        match header {
            Some(index) => {
                if !self.inherited.contains(&index) {
                    self.inherited.push(index);
                }
                Ok(())
            }
            None => Err(FramerError::NotWellFormed("undeclared namespace prefix")),
        }
    }
}

/// Character classes for the scanner's hot loops.
const NAME_START: u8 = 1;
const NAME: u8 = 2;

/// Per byte: whether it may start a name and whether it may continue one (XML 1.0 §2.3,
/// ASCII part). Bytes of multi-byte UTF-8 characters are accepted in both positions.
const CHARACTER_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        let start = b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80;
        let name = start || b.is_ascii_digit() || b == b'-' || b == b'.';
        table[byte] = if start { NAME_START } else { 0 } | if name { NAME } else { 0 };
        byte += 1;
    }
    table
};

fn is_name_start(byte: u8) -> bool {
    CHARACTER_CLASS[usize::from(byte)] & NAME_START != 0
}

fn is_name_char(byte: u8) -> bool {
    CHARACTER_CLASS[usize::from(byte)] & NAME != 0
}

/// Equality of the short names compared on the hot path (end tags, attribute names,
/// prefixes). An inline loop: a call to `memcmp` costs more than these comparisons.
#[inline]
fn same_bytes(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).all(|(left, right)| left == right)
}

/// How far the word-at-a-time search looks before handing over to memchr. Attribute values
/// and the text between tags are mostly shorter than this, and for them the call and setup of
/// memchr's vector search cost more than the search itself.
const INLINE_SEARCH_BYTES_MAX: usize = 32;

/// A word with every byte set to 0x01, for the word-at-a-time byte search.
const BYTES_LOW: u64 = u64::from_le_bytes([0x01; 8]);
/// A word with every byte set to 0x80.
const BYTES_HIGH: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of each byte of `word` that equals `needle`, and possibly of bytes above
/// the first match (the classic "has zero byte" test on `word ^ needle`), which is enough to
/// find the first match.
#[inline(always)]
fn matching_bytes(word: u64, needle: u8) -> u64 {
    let difference = word ^ (BYTES_LOW * u64::from(needle));
    difference.wrapping_sub(BYTES_LOW) & !difference & BYTES_HIGH
}

/// The first occurrence of `first` or `second`.
#[inline(always)]
fn find2(first: u8, second: u8, haystack: &[u8]) -> Option<usize> {
    find_with(haystack, |word| matching_bytes(word, first) | matching_bytes(word, second)).or_else(|| {
        let start = inline_searched(haystack);
        memchr2(first, second, &haystack[start..]).map(|offset| start + offset)
    })
}

/// Finds where attribute-value text stops: at the first `quote`, `<` or `&`. Also tells
/// whether a byte below 0x20 came before (a tab or line end, which normalisation replaces,
/// XML 1.0 §3.3.3; any other control character is refused later, by `check_characters`).
#[inline(always)]
fn find_value_end(quote: u8, haystack: &[u8]) -> (Option<usize>, bool) {
    let searched = inline_searched(haystack);
    let mut offset = 0;
    while offset < searched {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&haystack[offset..offset + 8]);
        let word = u64::from_le_bytes(bytes);
        let stops = matching_bytes(word, quote) | matching_bytes(word, b'<') | matching_bytes(word, b'&');
        // Bytes below 0x20 (the test can only misfire above a byte that is below 0x20).
        let low = word.wrapping_sub(BYTES_LOW * 0x20) & !word & BYTES_HIGH;
        if stops != 0 {
            let first = stops.trailing_zeros();
            let low_before = low & ((1u64 << first) - 1);
            return (Some(offset + (first / 8) as usize), low_before != 0);
        }
        if low != 0 {
            // Rare: finish with the general search, which checks the bytes it passes.
            break;
        }
        offset += 8;
    }
    let rest = &haystack[offset..];
    let stop = memchr3(quote, b'<', b'&', rest);
    let passed = &rest[..stop.unwrap_or(rest.len())];
    let low = passed.iter().any(|&byte| byte < 0x20);
    (stop.map(|stop| offset + stop), low)
}

/// How many bytes of `haystack` `find_with` examines.
#[inline(always)]
fn inline_searched(haystack: &[u8]) -> usize {
    (haystack.len() / 8 * 8).min(INLINE_SEARCH_BYTES_MAX)
}

/// Searches the first whole words of `haystack` (up to `INLINE_SEARCH_BYTES_MAX` bytes) with
/// `matches`, which marks matching bytes as `matching_bytes` does.
#[inline(always)]
fn find_with(haystack: &[u8], matches: impl Fn(u64) -> u64) -> Option<usize> {
    let searched = inline_searched(haystack);
    let mut offset = 0;
    while offset < searched {
        let mut word = [0u8; 8];
        word.copy_from_slice(&haystack[offset..offset + 8]);
        let found = matches(u64::from_le_bytes(word));
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    None
}

/// XML 1.0 §2.3 `S`.
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn whitespace_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|&byte| !is_whitespace(byte)).unwrap_or(bytes.len())
}

/// The offset of the first byte at or after `position` that cannot continue a name.
fn skip_name(frame: &[u8], position: usize) -> usize {
    frame[position..].iter().position(|&byte| !is_name_char(byte)).map_or(frame.len(), |offset| position + offset)
}

/// Checks that a name is a qualified name (XML Namespaces §4) and finds its colon.
fn qname_colon(frame: &[u8], name: Span) -> Result<Option<usize>, FramerError> {
    let bytes = name.of(frame);
    // Names are short: an inline search beats a call to memchr.
    let Some(colon) = bytes.iter().position(|&byte| byte == b':') else {
        return Ok(None);
    };
    let local = &bytes[colon + 1..];
    let well_formed = colon > 0 && local.first().is_some_and(|&byte| is_name_start(byte)) && !local.contains(&b':');
    if !well_formed {
        return Err(FramerError::NotWellFormed("malformed qualified name"));
    }
    Ok(Some(name.start + colon))
}

/// The prefix an attribute name declares: `Some("")` for `xmlns`, `Some("p")` for
/// `xmlns:p`, `None` for an ordinary attribute.
fn declared_prefix(name: &[u8]) -> Option<&[u8]> {
    if name == b"xmlns" {
        return Some(b"");
    }
    name.strip_prefix(b"xmlns:")
}

/// Splits a tag's qualified name into prefix (`""` if none) and local name, at the colon
/// found while scanning.
fn split_name<'a>(frame: &'a str, tag: &Tag) -> (&'a str, &'a str) {
    match tag.colon {
        Some(colon) => (Span { start: tag.name.start, end: colon }.text(frame), Span { start: colon + 1, end: tag.name.end }.text(frame)),
        None => ("", tag.name.text(frame)),
    }
}

/// Splits a qualified name into prefix (`""` if none) and local name.
fn split_qname(qname: &str) -> (&str, &str) {
    qname.split_once(':').unwrap_or(("", qname))
}

/// Views a frame (or a part of one cut at ASCII delimiters) as text. Frames are validated as
/// UTF-8 before any view is built, so this cannot fail; the empty string is only a defensive
/// fallback that keeps the framer panic-free.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// The frame's top-level start tag as text: all that views take their fields from, so the
/// rest of the frame need not be converted.
fn start_tag_text<'a>(frame: &'a [u8], tag: &Tag) -> &'a str {
    text(frame.get(..tag.end).unwrap_or_default())
}

/// An attribute's value, unescaped and normalised (XML 1.0 §3.3.3); borrowed when there is
/// nothing to replace.
fn attribute_value<'a>(frame: &'a str, attribute: &AttributeSpan) -> Cow<'a, str> {
    let raw = attribute.value.text(frame);
    if attribute.normalize {
        Cow::Owned(normalize_attribute(raw))
    } else {
        Cow::Borrowed(raw)
    }
}

/// Replaces references and turns literal tabs and line ends into spaces (a `\r\n` pair into
/// one space), as XML 1.0 §2.11 and §3.3.3 require of attribute values.
fn normalize_attribute(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(index) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..index]);
        let after = &rest[index + 1..];
        match rest.as_bytes()[index] {
            b'&' => {
                let Some(length) = after.find(';') else {
                    // The scanner checked every reference; keep the rest as it is.
                    out.push_str(&rest[index..]);
                    return out;
                };
                match reference_char(&after.as_bytes()[..length]) {
                    Ok(character) => out.push(character),
                    Err(_) => out.push_str(&rest[index..=index + length + 1]),
                }
                rest = &after[length + 1..];
            }
            b'\r' => {
                out.push(' ');
                rest = after.strip_prefix('\n').unwrap_or(after);
            }
            _ => {
                out.push(' ');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character a reference (the bytes between `&` and `;`) stands for. Only the five
/// predefined entities and character references to legal characters are allowed
/// (RFC 6120 §11.1, XML 1.0 §4.1 WFC: Legal Character).
fn reference_char(name: &[u8]) -> Result<char, FramerError> {
    match name {
        b"amp" => Ok('&'),
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"apos" => Ok('\''),
        b"quot" => Ok('"'),
        [b'#', b'x', digits @ ..] => char_reference(digits, 16),
        [b'#', digits @ ..] => char_reference(digits, 10),
        [first, ..] if is_name_start(*first) && name.iter().all(|&byte| is_name_char(byte)) => {
            Err(FramerError::RestrictedXml("entity references are not allowed"))
        }
        _ => Err(FramerError::NotWellFormed("malformed reference")),
    }
}

fn char_reference(digits: &[u8], radix: u32) -> Result<char, FramerError> {
    if digits.is_empty() {
        return Err(FramerError::NotWellFormed("malformed character reference"));
    }
    let mut value: u32 = 0;
    for &digit in digits {
        let Some(digit) = char::from(digit).to_digit(radix) else {
            return Err(FramerError::NotWellFormed("malformed character reference"));
        };
        // Saturation keeps any overflow above the largest code point, hence invalid.
        value = value.saturating_mul(radix).saturating_add(digit);
    }
    char::from_u32(value)
        .filter(|&character| is_xml_char(character))
        .ok_or(FramerError::NotWellFormed("character reference to an illegal character"))
}

/// XML 1.0 §2.2 `Char`.
fn is_xml_char(character: char) -> bool {
    matches!(
        u32::from(character),
        0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF
    )
}

/// Checks a complete frame's characters: UTF-8 (RFC 6120 §11.6) and no C0 control character
/// other than tab, line feed and carriage return (XML 1.0 §2.2). Returns whether the frame
/// holds a `]`: only then can it hold `]]>` (`check_character_data`).
// Kept out of the scanning loop, whose registers its vector constants would otherwise hold.
#[inline(never)]
fn check_characters(frame: &[u8]) -> Result<bool, FramerError> {
    // One branch-free pass, which vectorises, collects the OR and the minimum of the bytes:
    // an ASCII-only frame is valid UTF-8 without further work, and one without bytes below
    // 0x20 has no control character. It also notes whether a `]` occurs (for `]]>`).
    let (high, low, brackets) = byte_summary(frame);
    if high >= 0x80 && std::str::from_utf8(frame).is_err() {
        return Err(FramerError::NotWellFormed("invalid UTF-8"));
    }
    let control = low < 0x20 && frame.iter().any(|&byte| byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r'));
    if control {
        return Err(FramerError::NotWellFormed("control character not allowed in XML"));
    }
    Ok(brackets)
}

/// XML 1.0 §2.4: character data cannot contain `]]>` (a strict parser on the recipient's side
/// would drop the stream). The sequence is legal in attribute values and ends CDATA sections,
/// so the rare frame that holds it is walked to see where it stands; the frame has passed the
/// scanner, so tags, quotes and CDATA sections are well formed.
fn check_character_data(frame: &[u8]) -> Result<(), FramerError> {
    const CDATA_END: &[u8] = b"]]>";
    if memmem::find(frame, CDATA_END).is_none() {
        return Ok(());
    }
    let mut position = 0;
    while position < frame.len() {
        let rest = &frame[position..];
        if rest.starts_with(CDATA_OPEN) {
            // Inside a CDATA section `]]>` is its end.
            position +=
                memmem::find(&rest[CDATA_OPEN.len()..], CDATA_END).map_or(rest.len(), |end| CDATA_OPEN.len() + end + CDATA_END.len());
        } else if rest[0] == b'<' {
            // A tag: `>` inside quoted attribute values does not end it.
            let mut quote = None;
            let mut end = rest.len();
            for (offset, &byte) in rest.iter().enumerate().skip(1) {
                match (quote, byte) {
                    (None, b'\'' | b'"') => quote = Some(byte),
                    (Some(open), _) if byte == open => quote = None,
                    (None, b'>') => {
                        end = offset + 1;
                        break;
                    }
                    _ => {}
                }
            }
            position += end;
        } else if rest.starts_with(CDATA_END) {
            return Err(FramerError::NotWellFormed("']]>' in character data"));
        } else {
            position += 1;
        }
    }
    Ok(())
}

/// The OR and the minimum of `bytes`, and whether one is `]`.
#[inline(always)]
fn byte_summary(bytes: &[u8]) -> (u8, u8, bool) {
    let mut high = 0;
    let mut low = u8::MAX;
    let mut brackets = 0;
    for &byte in bytes {
        high |= byte;
        low = if byte < low { byte } else { low };
        brackets |= u8::from(byte == b']');
    }
    (high, low, brackets != 0)
}

/// Classifies non-whitespace text where no text is allowed: invalid UTF-8 or a control
/// character is `<not-well-formed/>`, anything else the `<bad-format/>` with `message`. `None`
/// while the first character is incomplete.
fn text_error(rest: &[u8], message: &'static str) -> Option<FramerError> {
    let first = &rest[..rest.len().min(4)];
    match std::str::from_utf8(first) {
        Err(error) if error.valid_up_to() == 0 => error.error_len().map(|_| FramerError::NotWellFormed("invalid UTF-8")),
        _ if first.first().is_some_and(|&byte| byte < 0x20) => Some(FramerError::NotWellFormed("control character not allowed in XML")),
        _ => Some(FramerError::BadFormat(message)),
    }
}

/// Checks the XML declaration (XML 1.0 §2.8): version 1.x, and if an encoding is declared it
/// must be UTF-8 (RFC 6120 §11.6).
fn check_declaration(frame: &[u8]) -> Result<(), FramerError> {
    let declaration = text(frame);
    let inner = declaration.get(DECLARATION_OPEN.len()..declaration.len().saturating_sub(2)).unwrap_or_default();
    let mut attributes = quick_xml::events::attributes::Attributes::new(inner, 0);
    let mut seen = 0;
    for attribute in &mut attributes {
        let attribute = attribute.map_err(|_| FramerError::NotWellFormed("malformed XML declaration"))?;
        let value = attribute.value.as_ref();
        // The pseudo-attributes must come in this order (XML 1.0 §2.8, §4.3.3, §2.9).
        match (seen, attribute.key.0) {
            (0, "version") if value.starts_with("1.") => seen = 1,
            (1, "encoding") if value.eq_ignore_ascii_case("UTF-8") => seen = 2,
            (1, "encoding") => return Err(FramerError::UnsupportedEncoding),
            (1 | 2, "standalone") if value == "yes" || value == "no" => seen = 3,
            _ => return Err(FramerError::NotWellFormed("malformed XML declaration")),
        }
    }
    if seen == 0 {
        return Err(FramerError::NotWellFormed("XML declaration without a version"));
    }
    Ok(())
}

/// Parses a checked stanza into an owned tree with quick-xml, resolving namespaces with the
/// stream header's declarations as the outermost scope.
fn build_element(bytes: &[u8], stream_namespaces: &[(String, String)]) -> Result<Element, FramerError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut bindings: Vec<(String, String)> = stream_namespaces.to_vec();
    let mut marks: Vec<usize> = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let mut pending_text = String::new();
    loop {
        let event = reader.read_event().map_err(|_| FramerError::NotWellFormed("malformed element"))?;
        match event {
            Event::Start(start) => {
                flush_text(&mut stack, &mut pending_text);
                let element = open_element(&start, &mut bindings, &mut marks)?;
                stack.push(element);
            }
            Event::Empty(start) => {
                flush_text(&mut stack, &mut pending_text);
                let element = open_element(&start, &mut bindings, &mut marks)?;
                if let Some(mark) = marks.pop() {
                    bindings.truncate(mark);
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => return Ok(element),
                }
            }
            Event::End(_) => {
                flush_text(&mut stack, &mut pending_text);
                if let Some(mark) = marks.pop() {
                    bindings.truncate(mark);
                }
                let Some(element) = stack.pop() else {
                    return Err(FramerError::NotWellFormed("end tag without start tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(element)),
                    None => return Ok(element),
                }
            }
            Event::Text(content) => pending_text.push_str(&content.xml10_content()),
            Event::CData(content) => pending_text.push_str(&content.xml10_content()),
            Event::GeneralRef(reference) => {
                pending_text.push(reference_char(reference.as_bytes())?);
            }
            Event::Comment(_) | Event::PI(_) | Event::DocType(_) | Event::Decl(_) => {
                return Err(FramerError::RestrictedXml("restricted XML construct"));
            }
            Event::Eof => return Err(FramerError::NotWellFormed("incomplete element")),
        }
    }
}

/// Moves accumulated character data into the innermost open element.
fn flush_text(stack: &mut [Element], pending_text: &mut String) {
    if pending_text.is_empty() {
        return;
    }
    if let Some(parent) = stack.last_mut() {
        parent.children.push(Node::Text(std::mem::take(pending_text)));
    } else {
        pending_text.clear();
    }
}

/// Builds an element (without children) from a start tag, pushing its namespace
/// declarations onto `bindings` and the scope mark onto `marks`.
fn open_element(start: &BytesStart<'_>, bindings: &mut Vec<(String, String)>, marks: &mut Vec<usize>) -> Result<Element, FramerError> {
    marks.push(bindings.len());
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|_| FramerError::NotWellFormed("malformed attribute"))?;
        let key = attribute.key.0;
        let value = normalize_attribute(&attribute.value);
        match declared_prefix(key.as_bytes()) {
            Some(prefix) => bindings.push((text(prefix).to_owned(), value)),
            None => attributes.push((key.to_owned(), value)),
        }
    }
    let (prefix, name) = split_qname(start.name().0);
    let namespace = if prefix == "xml" {
        XML_NAMESPACE
    } else {
        match bindings.iter().rev().find(|(declared, _)| declared == prefix) {
            Some((_, uri)) => uri.as_str(),
            None if prefix.is_empty() => "",
            None => return Err(FramerError::NotWellFormed("undeclared namespace prefix")),
        }
    };
    Ok(Element { name: name.to_owned(), namespace: namespace.to_owned(), attributes, children: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FramerLimits = FramerLimits { stanza_bytes_max: 4096, depth_max: 16, attributes_max: 16, namespace_declarations_max: 4 };

    const HEADER: &str = "<stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

    /// A compact description of a frame, for expectations.
    fn describe(frame: &Frame<'_>) -> String {
        fn fields(fields: &[(&str, &Option<Cow<'_, str>>)]) -> String {
            fields.iter().filter_map(|(key, value)| value.as_ref().map(|value| format!(" {key}={value}"))).collect()
        }
        match frame {
            Frame::StreamOpen(open) => format!(
                "open {}:{} ns={} default={}{}",
                open.prefix,
                open.local_name,
                open.namespace.unwrap_or("-"),
                open.default_namespace.unwrap_or("-"),
                fields(&[("to", &open.to), ("from", &open.from), ("version", &open.version), ("id", &open.id), ("lang", &open.lang),]),
            ),
            Frame::Stanza(stanza) => format!(
                "{{{}}}{}{}",
                stanza.namespace,
                stanza.name,
                fields(&[("to", &stanza.to), ("from", &stanza.from), ("id", &stanza.id), ("type", &stanza.kind),]),
            ),
            Frame::StreamClose => "close".to_owned(),
            Frame::Whitespace => "ws".to_owned(),
        }
    }

    /// Everything about a frame, for comparing chunkings: the description, the exact bytes,
    /// and the tree quick-xml builds from them (which must succeed for every stanza).
    fn render(frame: &Frame<'_>) -> String {
        match frame {
            Frame::Stanza(stanza) => {
                let tree = stanza.element().map(|element| format!("{element:?}"));
                format!(
                    "{} {} {:?}",
                    describe(frame),
                    String::from_utf8_lossy(stanza.bytes()),
                    tree.expect("quick-xml parses every stanza the framer accepts"),
                )
            }
            _ => describe(frame),
        }
    }

    /// Feeds `chunks` to a fresh framer the way a connection does, returning
    /// (description, full rendering) per frame; an error ends the list.
    fn frames(limits: FramerLimits, chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut framer = Framer::new(limits);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk);
            loop {
                match framer.next_frame() {
                    Ok(Some(frame)) => out.push((describe(&frame), render(&frame))),
                    Ok(None) => break,
                    Err(error) => {
                        let line = format!("error {}", error.condition());
                        out.push((line.clone(), line));
                        // The stream is dead: the error repeats and pushes are ignored.
                        framer.push(b"<a/>");
                        assert_eq!(framer.next_frame(), Err(error));
                        return out;
                    }
                }
                // Memory stays bounded by the limit plus one chunk.
                assert!(framer.buffered_len() <= limits.stanza_bytes_max + chunk.len());
            }
        }
        out
    }

    /// Checks the frames of `input` fed whole, split in two at every byte boundary, and one
    /// byte at a time: all must equal `expected`.
    fn check_with(limits: FramerLimits, input: &[u8], expected: &[&str]) {
        let whole = frames(limits, &[input]);
        let described: Vec<&str> = whole.iter().map(|(short, _)| short.as_str()).collect();
        assert_eq!(described, expected, "input: {}", String::from_utf8_lossy(input));
        for split in 0..=input.len() {
            let (first, second) = input.split_at(split);
            assert_eq!(frames(limits, &[first, second]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(frames(limits, &bytes), whole, "one byte at a time");
    }

    fn check(input: &str, expected: &[&str]) {
        check_with(LIMITS, input.as_bytes(), expected);
    }

    /// `input` after the standard stream header.
    fn check_stream(input: &str, expected: &[&str]) {
        let mut full = vec![OPEN];
        full.extend_from_slice(expected);
        check(&format!("{HEADER}{input}"), &full);
    }

    const OPEN: &str = "open stream:stream ns=http://etherx.jabber.org/streams \
        default=jabber:client to=example.com version=1.0";

    /// The first stanza of `input` (after the standard header) and the framer that holds it.
    fn with_stanza<T>(input: &str, inspect: impl FnOnce(&Stanza<'_>) -> T) -> T {
        let mut framer = Framer::new(LIMITS);
        framer.push(format!("{HEADER}{input}").as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        match framer.next_frame() {
            Ok(Some(Frame::Stanza(stanza))) => inspect(&stanza),
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// A client stream with a little of everything the framer must handle.
    const REALISTIC_STREAM: &str = concat!(
        "<?xml version='1.0' encoding='UTF-8'?>\n",
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'",
        " to='example.com' version='1.0' xml:lang='en'>\n",
        "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAA=</auth>",
        "<message to='romeo@example.net' from='juliet@example.com/balcony' id='m1' type='chat'>",
        "<body>Fish &amp; chips &lt;3 &#x263A; &#9731; caf\u{e9} &quot;x&apos;</body>",
        "<thread>t1</thread></message> \n\t ",
        "<iq type=\"get\" id='r&amp;1'><query xmlns='jabber:iq:roster'><item jid='a@b'>",
        "<group>Friends</group></item></query></iq>\n",
        "<presence/>",
        "<message to='x@y'><body><![CDATA[<not> & ]] markup]]></body></message>",
        "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>\n",
        "</stream:stream>\n",
    );

    #[test]
    fn realistic_stream_gives_the_same_frames_however_it_is_chunked() {
        check(
            REALISTIC_STREAM,
            &[
                "open stream:stream ns=http://etherx.jabber.org/streams default=jabber:client \
                 to=example.com version=1.0 lang=en",
                "ws",
                "{http://etherx.jabber.org/streams}features",
                "{urn:ietf:params:xml:ns:xmpp-tls}starttls",
                "{urn:ietf:params:xml:ns:xmpp-sasl}auth",
                "{jabber:client}message to=romeo@example.net from=juliet@example.com/balcony \
                 id=m1 type=chat",
                "ws",
                "{jabber:client}iq id=r&1 type=get",
                "ws",
                "{jabber:client}presence",
                "{jabber:client}message to=x@y",
                "{http://etherx.jabber.org/streams}error",
                "ws",
                "close",
            ],
        );
    }

    /// Mutated streams, whatever they contain, give the same frames or error whether fed
    /// whole, one byte at a time or in random pieces; and every stanza accepted parses with
    /// quick-xml (see `render`).
    #[test]
    fn mutated_streams_give_the_same_result_however_they_are_chunked() {
        const SPECIAL: &[u8] = b"<>&/'\"=:;#x!?[]- \n\t\x00\xC3\xA9\xFF";
        // xorshift64: deterministic and dependency-free.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut random = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..300 {
            let mut input = REALISTIC_STREAM.as_bytes().to_vec();
            for _ in 0..1 + random(3) {
                let at = random(input.len());
                let byte = SPECIAL[random(SPECIAL.len())];
                match random(3) {
                    0 => {
                        input.remove(at);
                    }
                    1 => input.insert(at, byte),
                    _ => input[at] = byte,
                }
            }
            let whole = frames(LIMITS, &[&input]);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(frames(LIMITS, &bytes), whole, "one byte at a time");
            let mut pieces = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let (piece, after) = rest.split_at(1 + random(rest.len().min(40)));
                pieces.push(piece);
                rest = after;
            }
            assert_eq!(frames(LIMITS, &pieces), whole, "random pieces");
            if whole.last().is_some_and(|(short, _)| short == "close") {
                accepted += 1;
            }
        }
        // Some mutations land in text and are harmless; most are caught.
        assert!(accepted > 10 && accepted < 200, "accepted {accepted}");
    }

    #[test]
    fn stanza_bytes_are_exact_and_attribute_values_borrow_when_clean() {
        let input = "<message to='a@b' id=\"x&amp;y\" type='chat\n'><body>hi</body></message>";
        with_stanza(input, |stanza| {
            assert_eq!(stanza.bytes(), input.as_bytes());
            assert!(matches!(stanza.to, Some(Cow::Borrowed("a@b"))));
            assert!(matches!(stanza.namespace, Cow::Borrowed("jabber:client")));
            assert_eq!(stanza.id.as_deref(), Some("x&y"));
            assert_eq!(stanza.kind.as_deref(), Some("chat "));
        });
    }

    #[test]
    fn prolog_variants() {
        let header = "<stream xmlns='jabber:client' to='a'>";
        let unprefixed = "open :stream ns=jabber:client default=jabber:client to=a";
        check(header, &[unprefixed]);
        check(&format!("\u{feff}{header}"), &[unprefixed]);
        check(&format!("\u{feff}<?xml version='1.0'?>{header}"), &[unprefixed]);
        check(&format!("<?xml version=\"1.0\" encoding='utf-8'?>\n\n{header} "), &[unprefixed, "ws"]);
        check(&format!("<?xml version='1.0' encoding='UTF-8' standalone='yes'?>{header}"), &[unprefixed]);
        check("<stream xmlns='jabber:client' to='a'/>", &[unprefixed, "close"]);
        check(
            "<s:stream xmlns:s='http://etherx.jabber.org/streams' from='&#x61;&amp;b' id='i'>",
            &["open s:stream ns=http://etherx.jabber.org/streams default=- from=a&b id=i"],
        );
        // What follows the stream's end: only whitespace.
        check(&format!("{header}</stream> \n"), &[unprefixed, "close"]);
        check(&format!("{header}</stream> <a/>"), &[unprefixed, "close", "error not-well-formed"]);
    }

    #[test]
    fn not_well_formed() {
        let error = ["error not-well-formed"];
        for stanza in [
            "<a b='<'/>",
            "<a b/>",
            "<a b c='1'/>",
            "<a b='1' b='2'/>",
            "<a b=1/>",
            "<a b='1'c='2'/>",
            "<a></b>",
            "<a><b></a></b>",
            "<a>&</a>",
            "<a>& amp;</a>",
            "<a b='&'/>",
            "<a>&#0;</a>",
            "<a>&#xD800;</a>",
            "<a>&#x110000;</a>",
            "<a>&#99999999999999999999;</a>",
            "<a>&#X41;</a>",
            "<a>&#;</a>",
            "<a>\u{1}</a>",
            "<foo:a/>",
            "<a foo:b='1'/>",
            "<xmlns:a/>",
            "<a xmlns:p=''/>",
            "<a xmlns:xmlns='urn:x'/>",
            "<a xmlns:xml='urn:x'/>",
            "<:a/>",
            "<a:/>",
            "<a:b:c xmlns:a='urn:a'/>",
            "<1a/>",
            "<a/ >",
            "<a></ a>",
            "<a><b xmlns:p='urn:p'/><p:c/></a>",
            "</stream>",
            "</stream:stream >x",
        ] {
            if stanza == "</stream:stream >x" {
                check_stream(stanza, &["close", "error not-well-formed"]);
            } else {
                check_stream(stanza, &error);
            }
        }
        // Invalid UTF-8 in a stanza, in the header, at stream level.
        let header = HEADER.as_bytes();
        let stanza = [header, b"<a>\xC3\x28</a>"].concat();
        check_with(LIMITS, &stanza, &[OPEN, "error not-well-formed"]);
        check_with(LIMITS, b"<stream to='\xFF'>", &error);
        check_with(LIMITS, &[header, b"\xFF"].concat(), &[OPEN, "error not-well-formed"]);
        check_with(LIMITS, &[header, b" \xE2\x82"].concat(), &[OPEN, "ws"]);
        check_with(LIMITS, b"\x01<stream>", &error);
        check("hello<stream>", &error);
        check("<![CDATA[x]]><stream>", &error);
        check("</stream>", &error);
    }

    #[test]
    fn restricted_xml() {
        let error = ["error restricted-xml"];
        // Before the header: DTDs (billion laughs), comments, processing instructions, and
        // an XML declaration anywhere but at the very start.
        check(
            "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
             <!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]><stream>&lol2;</stream>",
            &error,
        );
        check("<!-- hi --><stream>", &error);
        check("<?php x?><stream>", &error);
        check(" <?xml version='1.0'?><stream>", &error);
        check("<?xml-stylesheet href='x'?><stream>", &error);
        check("<?xml version='1.0'?><?xml version='1.0'?><stream>", &error);
        for stanza in [
            "<!-- hi -->",
            "<!DOCTYPE x>",
            "<?pi?>",
            "<message><!-- hi --></message>",
            "<message><?pi?></message>",
            "<message><!ENTITY x 'y'></message>",
            "<message><body>&lol;</body></message>",
            "<message to='&lol;'/>",
        ] {
            check_stream(stanza, &error);
        }
    }

    #[test]
    fn bad_format_and_unsupported_encoding() {
        check_stream("hello", &["error bad-format"]);
        check_stream(" \u{e9}", &["ws", "error bad-format"]);
        check_stream("<a/>&amp;", &["{jabber:client}a", "error bad-format"]);
        check_stream("<![CDATA[ ]]>", &["error bad-format"]);
        let unsupported = ["error unsupported-encoding"];
        check_with(LIMITS, b"\xFE\xFF\x00<\x00s", &unsupported);
        check_with(LIMITS, b"\xFF\xFE<\x00s\x00", &unsupported);
        check_with(LIMITS, b"<\x00s\x00", &unsupported);
        check("<?xml version='1.0' encoding='ISO-8859-1'?><stream>", &unsupported);
        check("<?xml version='1.0' encoding='UTF-16'?><stream>", &unsupported);
        check("<?xml encoding='UTF-8'?><stream>", &["error not-well-formed"]);
        check("<?xml version='1.0' foo='x'?><stream>", &["error not-well-formed"]);
    }

    #[test]
    fn stanza_size_limit_is_exact() {
        let limits = FramerLimits { stanza_bytes_max: 64, ..LIMITS };
        let stanza = |len: usize| format!("<a>{}</a>", "x".repeat(len - 7));
        let input = format!("<stream>{}", stanza(64));
        check_with(limits, input.as_bytes(), &["open :stream ns=- default=-", "{}a"]);
        let input = format!("<stream>{}", stanza(65));
        check_with(limits, input.as_bytes(), &["open :stream ns=- default=-", "error policy-violation"]);
        // The header is bounded too, and so is a frame that never ends: the error comes as
        // soon as the limit is crossed, with the buffer bounded.
        let header = format!("<stream a='{}'>", "x".repeat(64));
        check_with(limits, header.as_bytes(), &["error policy-violation"]);
        let mut framer = Framer::new(limits);
        framer.push(b"<stream><a>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        let mut pushed = 0;
        let error = loop {
            framer.push(&[b'x'; 10]);
            pushed += 10;
            match framer.next_frame() {
                Ok(None) => assert!(framer.buffered_len() <= 64 + 10),
                Ok(Some(frame)) => panic!("unexpected {frame:?}"),
                Err(error) => break error,
            }
        };
        assert_eq!(error, FramerError::PolicyViolation("frame larger than stanza_bytes_max"));
        assert_eq!(pushed, 70);
    }

    #[test]
    fn depth_attribute_and_declaration_limits() {
        let limits = FramerLimits { depth_max: 3, attributes_max: 3, namespace_declarations_max: 2, ..LIMITS };
        let open = "open :stream ns=- default=-";
        let check_limits = |stanza: &str, expected: &str| {
            check_with(limits, format!("<stream>{stanza}").as_bytes(), &[open, expected]);
        };
        check_limits("<a><b><c/></b></a>", "{}a");
        check_limits("<a><b><c><d/></c></b></a>", "error policy-violation");
        check_limits("<a><b><c>text</c></b><b><c/></b></a>", "{}a");
        check_limits("<a x='1' y='2' z='3'/>", "{}a");
        check_limits("<a><b x='1' y='2' z='3' w='4'/></a>", "error policy-violation");
        check_limits("<a xmlns='urn:a' xmlns:p='urn:p' p:x='1'/>", "{urn:a}a");
        check_limits("<a xmlns='urn:a' xmlns:p='urn:p' xmlns:q='urn:q'/>", "error policy-violation");
        check_limits("<a xmlns='urn:a' y='2' z='3' w='4'/>", "error policy-violation");
        // The header counts attributes too.
        check_with(limits, b"<stream a='1' b='2' c='3' d='4'>", &["error policy-violation"]);
    }

    #[test]
    fn limits_can_be_raised_mid_stream() {
        let small = FramerLimits { stanza_bytes_max: 32, ..LIMITS };
        let mut framer = Framer::new(small);
        framer.push(b"<stream>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        framer.set_limits(LIMITS);
        let stanza = format!("<a>{}</a>", "x".repeat(100));
        framer.push(stanza.as_bytes());
        match framer.next_frame() {
            Ok(Some(Frame::Stanza(found))) => assert_eq!(found.bytes(), stanza.as_bytes()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn limits_lowered_mid_frame_apply_to_the_bytes_already_scanned() {
        let mut framer = Framer::new(LIMITS);
        framer.push(format!("<stream><a>{}", "x".repeat(100)).as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert_eq!(framer.next_frame(), Ok(None));
        framer.set_limits(FramerLimits { stanza_bytes_max: 50, ..LIMITS });
        framer.push(b"y");
        assert!(matches!(framer.next_frame(), Err(FramerError::PolicyViolation(_))));
    }

    #[test]
    fn with_from_replaces_or_inserts_and_escapes() {
        let stamp = |input: &str, from: &str| with_stanza(input, |stanza| String::from_utf8(stanza.with_from(from)));
        assert_eq!(
            stamp("<message to='b@c' from=\"x@y\" id='1'><body/></message>", "a@b/r").ok(),
            Some("<message to='b@c' from=\"a@b/r\" id='1'><body/></message>".to_owned())
        );
        assert_eq!(
            stamp("<message to='b@c'><body>hi</body></message>", "a@b/r").ok(),
            Some("<message from='a@b/r' to='b@c'><body>hi</body></message>".to_owned())
        );
        assert_eq!(stamp("<presence/>", "a@b/r").ok(), Some("<presence from='a@b/r'/>".to_owned()));
        assert_eq!(
            stamp("<iq\ntype='get' from=''/>", "a'b\"&<c>").ok(),
            Some("<iq\ntype='get' from='a&apos;b&quot;&amp;&lt;c&gt;'/>".to_owned())
        );
    }

    #[test]
    fn prefixes_declared_on_the_stream_header_are_declared_on_forwarded_copies() {
        let header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
            xmlns:ex='urn:example' xmlns:q=\"urn:q&amp;\" to='example.com' version='1.0'>";
        let mut framer = Framer::new(LIMITS);
        framer.push(
            format!("{header}<message to='b@c'><ex:data q:attr='1'/></message><message from='z'><p:x xmlns:p='urn:p'/></message>")
                .as_bytes(),
        );
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        let Ok(Some(Frame::Stanza(stanza))) = framer.next_frame() else { panic!("stanza") };
        let copy = String::from_utf8(stanza.with_from("a@b/r")).expect("utf8");
        assert_eq!(copy, "<message xmlns:ex='urn:example' xmlns:q='urn:q&amp;' from='a@b/r' to='b@c'><ex:data q:attr='1'/></message>");
        // The copy stands alone: a framer without those declarations accepts it.
        let mut fresh = Framer::new(LIMITS);
        fresh.push(format!("{HEADER}{copy}").as_bytes());
        assert!(matches!(fresh.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert!(matches!(fresh.next_frame(), Ok(Some(Frame::Stanza(_)))), "the forwarded copy is namespace-well-formed");
        // A stanza that declares its own prefixes is copied as it came.
        let Ok(Some(Frame::Stanza(stanza))) = framer.next_frame() else { panic!("stanza") };
        assert_eq!(
            String::from_utf8(stanza.with_from("a@b/r")).ok().as_deref(),
            Some("<message from='a@b/r'><p:x xmlns:p='urn:p'/></message>")
        );
    }

    #[test]
    fn cdata_end_in_character_data_is_not_well_formed() {
        let error = "error not-well-formed";
        check_stream("<message><body>a ]]> b</body></message>", &[error]);
        check_stream("<message><body>]]></body></message>", &[error]);
        check_stream("<message><body>&amp;]]></body></message>", &[error]);
        // Legal: in an attribute value, as a CDATA section's end, and escaped.
        check_stream("<message id=']]>'><body a=\"]]>\">x</body></message>", &["{jabber:client}message id=]]>"]);
        check_stream("<message><body><![CDATA[x]]]]>]&gt; ]]&gt;</body></message>", &["{jabber:client}message"]);
        check_stream("<message><body>] ]> ]]</body></message>", &["{jabber:client}message"]);
    }

    #[test]
    fn child_elements_are_counted() {
        assert_eq!(with_stanza("<iq type='get' id='1'/>", |stanza| stanza.children()), 0);
        assert_eq!(with_stanza("<iq type='get' id='1'><a><b/><c/></a></iq>", |stanza| stanza.children()), 1);
        assert_eq!(with_stanza("<iq type='set' id='1'><a/>text<b>x</b></iq>", |stanza| stanza.children()), 2);
    }

    #[test]
    fn element_tree_resolves_namespaces() {
        let input = "<iq type='set' id='b1' xmlns:ex='urn:example'>\
            <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony &amp; garden\
            </resource></bind><ex:data ex:attr='v &lt; w' xml:lang='fr'>x<![CDATA[<y>]]>&#x7A;\
            </ex:data><plain xmlns=''/></iq>";
        let tree = with_stanza(input, |stanza| stanza.element()).expect("element");
        let expected = Element::new("iq", "jabber:client")
            .with_attribute("type", "set")
            .with_attribute("id", "b1")
            .with_child(
                Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                    .with_child(Element::new("resource", "urn:ietf:params:xml:ns:xmpp-bind").with_text("balcony & garden")),
            )
            .with_child(
                Element::new("data", "urn:example").with_attribute("ex:attr", "v < w").with_attribute("xml:lang", "fr").with_text("x<y>z"),
            )
            .with_child(Element::new("plain", ""));
        assert_eq!(tree, expected);

        let features = "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>\
            <stream:x/></stream:features>";
        let (namespace, tree) = with_stanza(features, |stanza| (stanza.namespace.to_string(), stanza.element()));
        assert_eq!(namespace, STREAMS_NAMESPACE);
        let tree = tree.expect("element");
        assert_eq!(tree.namespace, STREAMS_NAMESPACE);
        assert!(tree.child("bind", "urn:ietf:params:xml:ns:xmpp-bind").is_some());
        assert!(tree.child("x", STREAMS_NAMESPACE).is_some());

        let own = "<p:error xmlns:p='urn:own' xmlns='urn:default'><x/></p:error>";
        let (name, namespace, tree) = with_stanza(own, |stanza| (stanza.name.to_owned(), stanza.namespace.to_string(), stanza.element()));
        assert_eq!((name.as_str(), namespace.as_str()), ("error", "urn:own"));
        let tree = tree.expect("element");
        assert_eq!(tree.elements().next().map(|x| x.namespace.as_str()), Some("urn:default"));

        // Bytes routed between shards parse in the client namespace.
        let parsed = parse_element(b"<message to='a@b'><body>hi &amp; bye</body></message>").expect("element");
        assert_eq!(parsed.namespace, "jabber:client");
        assert_eq!(parsed.child("body", "jabber:client").map(Element::text), Some("hi & bye".to_owned()));
    }

    #[test]
    fn restart_keeps_pipelined_bytes_unless_discarding() {
        let mut framer = Framer::new(LIMITS);
        framer.push(
            format!(
                "{HEADER}<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>\
            <?xml version='1.0'?><stream:stream xmlns='jabber:client' \
            xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'><a/>"
            )
            .as_bytes(),
        );
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stanza(_)))));
        framer.restart(false);
        match framer.next_frame() {
            Ok(Some(frame)) => assert_eq!(describe(&frame), OPEN),
            other => panic!("unexpected {other:?}"),
        }
        match framer.next_frame() {
            Ok(Some(frame)) => assert_eq!(describe(&frame), "{jabber:client}a"),
            other => panic!("unexpected {other:?}"),
        }

        // After STARTTLS the bytes received in the clear are dropped, even a partial frame.
        let mut framer = Framer::new(LIMITS);
        framer.push(
            format!(
                "{HEADER}<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
            <message to='evil'>injected</message><pres"
            )
            .as_bytes(),
        );
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stanza(_)))));
        framer.restart(true);
        assert_eq!(framer.buffered_len(), 0);
        assert_eq!(framer.next_frame(), Ok(None));
        framer.push(format!("<?xml version='1.0'?>{HEADER}").as_bytes());
        match framer.next_frame() {
            Ok(Some(frame)) => assert_eq!(describe(&frame), OPEN),
            other => panic!("unexpected {other:?}"),
        }
        // After a restart, whitespace may end the old stream before the new declaration (go-xmpp
        // sends a line break after each element): the declaration is still accepted.
        let mut framer = Framer::new(LIMITS);
        framer.push(format!("{HEADER}<auth/>\n").as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stanza(_)))));
        framer.restart(false);
        framer.push(format!(" <?xml version='1.0'?>{HEADER}").as_bytes());
        match framer.next_frame() {
            Ok(Some(frame)) => assert_eq!(describe(&frame), OPEN),
            other => panic!("unexpected {other:?}"),
        }
        // A partially scanned frame is scanned again as the new stream's prolog.
        let mut framer = Framer::new(LIMITS);
        framer.push(format!("{HEADER}<stream:str").as_bytes());
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        assert_eq!(framer.next_frame(), Ok(None));
        framer.restart(false);
        framer.push(b"eam xmlns:stream='http://etherx.jabber.org/streams'>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
    }

    #[test]
    fn idle_memory_is_released_and_the_framer_goes_on() {
        let mut framer = Framer::new(LIMITS);
        framer.push(format!("{HEADER}<a/>").as_bytes());
        while let Ok(Some(_)) = framer.next_frame() {}
        assert_eq!(framer.buffered_len(), 0);
        framer.release_idle_memory();
        assert_eq!(framer.buffer.capacity(), 0);
        framer.push(b" <a/>");
        assert_eq!(framer.next_frame(), Ok(Some(Frame::Whitespace)));
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stanza(_)))));
        // Not released while bytes are buffered.
        framer.push(b"<b>");
        assert_eq!(framer.next_frame(), Ok(None));
        framer.release_idle_memory();
        framer.push(b"</b>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::Stanza(_)))));
    }

    /// A large stanza arriving one byte at a time is scanned in linear time: each push only
    /// scans the new byte (a quadratic rescan would make this test take minutes).
    #[test]
    fn large_stanza_byte_at_a_time_is_linear() {
        let limits = FramerLimits { stanza_bytes_max: 1 << 20, ..LIMITS };
        let big = "y".repeat(64 * 1024);
        let stanza = format!("<message id='{big}'><body>{big}&amp;{big}</body><x><![CDATA[{big}]]></x></message>");
        let mut framer = Framer::new(limits);
        framer.push(b"<stream>");
        assert!(matches!(framer.next_frame(), Ok(Some(Frame::StreamOpen(_)))));
        for (index, byte) in stanza.bytes().enumerate() {
            framer.push(&[byte]);
            match framer.next_frame() {
                Ok(None) => assert!(index + 1 < stanza.len()),
                Ok(Some(Frame::Stanza(found))) => {
                    assert_eq!(index + 1, stanza.len());
                    assert_eq!(found.bytes(), stanza.as_bytes());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn errors_map_to_stream_conditions() {
        let cases = [
            (FramerError::NotWellFormed("x"), "not-well-formed"),
            (FramerError::RestrictedXml("x"), "restricted-xml"),
            (FramerError::PolicyViolation("x"), "policy-violation"),
            (FramerError::UnsupportedEncoding, "unsupported-encoding"),
            (FramerError::BadFormat("x"), "bad-format"),
        ];
        for (error, condition) in cases {
            assert_eq!(error.condition(), condition);
            assert!(error.to_string().starts_with(condition));
        }
        assert_eq!(FramerError::BadFormat("text at stream level").text(), "text at stream level");
    }
}
