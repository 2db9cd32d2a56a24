//! XMPP addresses (JIDs) as defined by RFC 7622: parsing, preparation and the newtypes
//! [`BareJid`], [`FullJid`] and [`Jid`] whose existence proves the address is valid and
//! normalised.
//!
//! This module owns the split of a JID string into localpart, domainpart and resourcepart
//! (RFC 7622 §3.1) and the PRECIS preparation of each part (RFC 7622 §3.2–3.4, RFC 8265), so two
//! JIDs that denote the same entity compare equal byte for byte.
//!
//! It deliberately does not own: DNS resolution or deciding which domains are local (routing),
//! conversion of IDNA A-labels (`xn--…`) to U-labels (core carries no IDNA tables, so an A-label
//! is kept as sent and does not compare equal to its U-label), JID Escaping (XEP-0106),
//! or the mapping of [`JidError`] to stanza errors (`jid-malformed`), which the stream layer does.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Largest localpart, domainpart or resourcepart, in bytes of UTF-8 after preparation
/// (RFC 7622 §3.2, §3.3, §3.4: each "MUST NOT be more than 1023 octets"). A full JID is therefore
/// at most `3 * JID_PART_BYTES_MAX + 2` bytes.
pub const JID_PART_BYTES_MAX: usize = 1023;

/// Largest part, in bytes of UTF-8 *before* preparation, that we spend PRECIS work on. Width
/// mapping, space mapping and NFC shrink text by at most a factor of three (a fullwidth letter is
/// 3 bytes and maps to 1), so a longer input can never prepare to [`JID_PART_BYTES_MAX`] bytes;
/// rejecting it first bounds the CPU a hostile address costs to a linear pass over 4 KiB.
pub const JID_PART_INPUT_BYTES_MAX: usize = 4 * JID_PART_BYTES_MAX;

/// Largest DNS label of a domainpart, in bytes (RFC 1035 §2.3.4, required of domainparts by
/// RFC 7622 §3.2 through IDNA2008). For U-labels we bound the UTF-8 form, which is an
/// approximation of the A-label limit that DNS actually imposes.
pub const DOMAIN_LABEL_BYTES_MAX: usize = 63;

const _: () = assert!(JID_PART_INPUT_BYTES_MAX >= 3 * JID_PART_BYTES_MAX);

/// Why a string is not a valid JID or JID part. Every variant maps to the `jid-malformed` stanza
/// error (RFC 6120 §8.3.3.8); the detail is for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JidError {
    /// A part that is present is empty: `@example.com`, `juliet@`, `example.com/`, `/foo`, or an
    /// empty string (RFC 7622 §3.2–3.4: no part may be zero octets).
    #[error("a JID part is empty")]
    Empty,
    /// A part exceeds [`JID_PART_BYTES_MAX`] after preparation (or
    /// [`JID_PART_INPUT_BYTES_MAX`] before it).
    #[error("a JID part is longer than {JID_PART_BYTES_MAX} bytes")]
    TooLong,
    /// The localpart fails the UsernameCaseMapped profile (RFC 8265 §3.3) or contains one of the
    /// characters RFC 7622 §3.3.1 forbids (`" & ' / : < > @`).
    #[error("invalid localpart")]
    InvalidLocal,
    /// The domainpart is neither an IP literal, an IPv4 address nor a sequence of valid labels
    /// (RFC 7622 §3.2).
    #[error("invalid domainpart")]
    InvalidDomain,
    /// The resourcepart fails the OpaqueString profile (RFC 8265 §4.2, RFC 7622 §3.4).
    #[error("invalid resourcepart")]
    InvalidResource,
    /// A bare JID was expected but the string has a resourcepart.
    #[error("a bare JID was expected but a resource is present")]
    UnexpectedResource,
    /// A full JID was expected but the string has no resourcepart.
    #[error("a full JID was expected but no resource is present")]
    MissingResource,
}

/// A JID without resource, `local@domain` or `domain`, with every part prepared. The inner string
/// contains at most one `@` (the separator) and no `/`, which the accessors rely on.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BareJid(String);

/// A JID with a resource, `local@domain/resource` or `domain/resource`, with every part prepared.
/// The first `/` of the inner string is the resource separator; the bare part before it contains
/// at most one `@`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct FullJid(String);

/// Any JID: what a `to` or `from` attribute holds before the caller knows which kind it needs.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Jid {
    /// No resourcepart.
    Bare(BareJid),
    /// With a resourcepart.
    Full(FullJid),
}

impl BareJid {
    /// Builds a bare JID from unprepared parts, preparing each (RFC 7622 §3.2, §3.3).
    pub fn new(local: Option<&str>, domain: &str) -> Result<Self, JidError> {
        let domain = prepare_domain(domain)?;
        match local {
            None => Ok(BareJid(domain)),
            Some(local) => {
                let mut jid = prepare_local(local)?;
                jid.reserve(1 + domain.len());
                jid.push('@');
                jid.push_str(&domain);
                Ok(BareJid(jid))
            }
        }
    }

    /// The prepared localpart, if any.
    pub fn local(&self) -> Option<&str> {
        split_bare(&self.0).0
    }

    /// The prepared domainpart.
    pub fn domain(&self) -> &str {
        split_bare(&self.0).1
    }

    /// The whole bare JID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This JID with a resource appended, the resource prepared per RFC 7622 §3.4.
    pub fn with_resource(&self, resource: &str) -> Result<FullJid, JidError> {
        let resource = prepare_resource(resource)?;
        let mut jid = String::with_capacity(self.0.len() + 1 + resource.len());
        jid.push_str(&self.0);
        jid.push('/');
        jid.push_str(&resource);
        Ok(FullJid(jid))
    }
}

impl FullJid {
    /// The bare JID this full JID belongs to.
    pub fn bare(&self) -> BareJid {
        BareJid(self.bare_str().to_owned())
    }

    /// The bare part as a string, without allocating.
    pub fn bare_str(&self) -> &str {
        self.split().0
    }

    /// The prepared localpart, if any.
    pub fn local(&self) -> Option<&str> {
        split_bare(self.bare_str()).0
    }

    /// The prepared domainpart.
    pub fn domain(&self) -> &str {
        split_bare(self.bare_str()).1
    }

    /// The prepared resourcepart; never empty.
    pub fn resource(&self) -> &str {
        self.split().1
    }

    /// The whole full JID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn split(&self) -> (&str, &str) {
        // Invariant: a FullJid is only built with a '/' separator and neither the localpart nor
        // the domainpart may contain '/', so the first '/' is the separator.
        let parts = self.0.split_once('/');
        debug_assert!(parts.is_some(), "FullJid without '/': {}", self.0);
        parts.unwrap_or((&self.0, ""))
    }
}

impl Jid {
    /// Parses and prepares any JID (RFC 7622 §3.1): the resourcepart is everything after the
    /// first `/`; of what remains, the localpart is everything before the first `@`.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare, resource) = match s.split_once('/') {
            Some((bare, resource)) => (bare, Some(resource)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((local, domain)) => (Some(local), domain),
            None => (None, bare),
        };
        let bare = BareJid::new(local, domain)?;
        match resource {
            None => Ok(Jid::Bare(bare)),
            Some(resource) => Ok(Jid::Full(bare.with_resource(resource)?)),
        }
    }

    /// The bare JID (a copy of this one if it is already bare).
    pub fn bare(&self) -> BareJid {
        match self {
            Jid::Bare(jid) => jid.clone(),
            Jid::Full(jid) => jid.bare(),
        }
    }

    /// The bare part as a string, without allocating.
    pub fn bare_str(&self) -> &str {
        match self {
            Jid::Bare(jid) => jid.as_str(),
            Jid::Full(jid) => jid.bare_str(),
        }
    }

    /// The prepared localpart, if any.
    pub fn local(&self) -> Option<&str> {
        match self {
            Jid::Bare(jid) => jid.local(),
            Jid::Full(jid) => jid.local(),
        }
    }

    /// The prepared domainpart.
    pub fn domain(&self) -> &str {
        match self {
            Jid::Bare(jid) => jid.domain(),
            Jid::Full(jid) => jid.domain(),
        }
    }

    /// The prepared resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        match self {
            Jid::Bare(_) => None,
            Jid::Full(jid) => Some(jid.resource()),
        }
    }

    /// The whole JID as a string.
    pub fn as_str(&self) -> &str {
        match self {
            Jid::Bare(jid) => jid.as_str(),
            Jid::Full(jid) => jid.as_str(),
        }
    }
}

impl FromStr for BareJid {
    type Err = JidError;

    /// Parses a JID that must not have a resourcepart.
    fn from_str(s: &str) -> Result<Self, JidError> {
        match Jid::parse(s)? {
            Jid::Bare(jid) => Ok(jid),
            Jid::Full(_) => Err(JidError::UnexpectedResource),
        }
    }
}

impl FromStr for FullJid {
    type Err = JidError;

    /// Parses a JID that must have a resourcepart.
    fn from_str(s: &str) -> Result<Self, JidError> {
        match Jid::parse(s)? {
            Jid::Full(jid) => Ok(jid),
            Jid::Bare(_) => Err(JidError::MissingResource),
        }
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Self, JidError> {
        Jid::parse(s)
    }
}

/// Lets maps keyed by `BareJid` be searched with the `&str` of a full JID's bare part
/// (`FullJid::bare_str`) without allocating; equal JIDs have equal strings, so hashing and
/// ordering agree.
impl std::borrow::Borrow<str> for BareJid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for FullJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<BareJid> for Jid {
    fn from(jid: BareJid) -> Self {
        Jid::Bare(jid)
    }
}

impl From<FullJid> for Jid {
    fn from(jid: FullJid) -> Self {
        Jid::Full(jid)
    }
}

/// Prepares and enforces a localpart: the UsernameCaseMapped profile (RFC 8265 §3.3, which
/// RFC 7622 §3.3 requires) and then the characters RFC 7622 §3.3.1 additionally forbids. The
/// check for those runs after width mapping, so a fullwidth `＠` cannot slip through.
pub fn prepare_local(s: &str) -> Result<String, JidError> {
    check_input_length(s)?;
    let prepared = stable::<UsernameCaseMapped>(s).ok_or(JidError::InvalidLocal)?;
    if prepared.chars().any(|c| LOCAL_FORBIDDEN_CHARS.contains(&c)) {
        return Err(JidError::InvalidLocal);
    }
    check_prepared_length(prepared)
}

/// Prepares and enforces a resourcepart: the OpaqueString profile (RFC 8265 §4.2, required by
/// RFC 7622 §3.4). Case and inner spaces are preserved; `/` and `@` are allowed.
pub fn prepare_resource(s: &str) -> Result<String, JidError> {
    check_input_length(s)?;
    let prepared = stable::<OpaqueString>(s).ok_or(JidError::InvalidResource)?;
    check_prepared_length(prepared)
}

/// Prepares a domainpart (RFC 7622 §3.2): maps the IDNA label separators to `.`, strips one
/// trailing dot, and accepts an IPv6 literal in brackets (normalised to RFC 5952 form), a
/// dotted-quad IPv4 address, or a sequence of labels.
///
/// Labels are checked the way IDNA2008 would for ASCII and U-labels without carrying its tables:
/// an ASCII label must be letter-digit-hyphen (RFC 5891 §4.2.3.1, RFC 1123 §2.1) and is
/// lowercased; a label with non-ASCII characters goes through the UsernameCaseMapped profile
/// (width mapping, lowercase, NFC, and the IdentifierClass repertoire, which is close to the
/// IDNA2008 PVALID set) and must then have no ASCII character other than letters, digits and
/// hyphens. No label is empty, longer than [`DOMAIN_LABEL_BYTES_MAX`], or starts or ends with a
/// hyphen.
pub fn prepare_domain(s: &str) -> Result<String, JidError> {
    check_input_length(s)?;
    // RFC 3490 §3.1 (kept by RFC 5895 §2): these are label separators too.
    let mapped: String = s
        .chars()
        .map(|c| match c {
            '\u{3002}' | '\u{FF0E}' | '\u{FF61}' => '.',
            c => c,
        })
        .collect();
    // RFC 7622 §3.2: a final label separator MUST be stripped.
    let domain = mapped.strip_suffix('.').unwrap_or(&mapped);
    if domain.is_empty() {
        return Err(JidError::Empty);
    }

    if let Some(literal) = domain.strip_prefix('[') {
        // RFC 7622 §3.2 / RFC 3986 §3.2.2: IP-literal. IPvFuture and zone identifiers are not
        // addresses an XMPP server can be reached at, so only IPv6addresses are accepted.
        let address = literal.strip_suffix(']').and_then(|inner| inner.parse::<Ipv6Addr>().ok()).ok_or(JidError::InvalidDomain)?;
        return Ok(format!("[{address}]"));
    }

    if domain.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // All-numeric: RFC 1123 §2.1 says a top-level label is alphabetic, so this can only be an
        // IPv4address (RFC 3986 §3.2.2). The std parser rejects leading zeros, which keeps
        // "010.0.0.1" from aliasing "10.0.0.1".
        let address: Ipv4Addr = domain.parse().map_err(|_| JidError::InvalidDomain)?;
        return Ok(address.to_string());
    }

    let mut prepared = String::with_capacity(domain.len());
    for (index, label) in domain.split('.').enumerate() {
        if index > 0 {
            prepared.push('.');
        }
        prepared.push_str(&prepare_label(label)?);
    }
    // Width mapping can make labels numeric (fullwidth digits): the result is then read as an
    // address, like the same digits typed in ASCII would be (found by the jid fuzz target).
    if prepared.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let address: Ipv4Addr = prepared.parse().map_err(|_| JidError::InvalidDomain)?;
        return Ok(address.to_string());
    }
    check_prepared_length(prepared)
}

/// RFC 7622 §3.3.1: characters the localpart may not contain even though the
/// UsernameCaseMapped profile allows them.
const LOCAL_FORBIDDEN_CHARS: [char; 8] = ['"', '&', '\'', '/', ':', '<', '>', '@'];

/// Splits a prepared bare JID into localpart and domainpart. Neither part can contain '@', so the
/// first one (if any) is the separator.
fn split_bare(bare: &str) -> (Option<&str>, &str) {
    match bare.split_once('@') {
        Some((local, domain)) => (Some(local), domain),
        None => (None, bare),
    }
}

fn check_input_length(s: &str) -> Result<(), JidError> {
    if s.is_empty() {
        Err(JidError::Empty)
    } else if s.len() > JID_PART_INPUT_BYTES_MAX {
        Err(JidError::TooLong)
    } else {
        Ok(())
    }
}

fn check_prepared_length(prepared: String) -> Result<String, JidError> {
    if prepared.is_empty() {
        Err(JidError::Empty)
    } else if prepared.len() > JID_PART_BYTES_MAX {
        Err(JidError::TooLong)
    } else {
        Ok(prepared)
    }
}

/// One DNS label of a domainpart, lowercased and checked (see [`prepare_domain`]).
/// Enforces a PRECIS profile and requires the result to be stable: enforcing it again gives it
/// back unchanged (RFC 8264 §7). Mapping can produce a code point the profile refuses in the
/// output — NFC turns U+0387 GREEK ANO TELEIA into U+00B7 MIDDLE DOT, which is only valid in
/// context (RFC 5892 Appendix A.3) — and such an address would not survive being read back.
/// A string the profile left as it was needs no second pass.
fn stable<P: PrecisFastInvocation>(input: &str) -> Option<String> {
    let prepared = P::enforce(input).ok()?;
    if prepared == input {
        return Some(prepared.into_owned());
    }
    let prepared = prepared.into_owned();
    let again = P::enforce(prepared.as_str()).ok()?;
    (again == prepared).then_some(prepared)
}

fn prepare_label(label: &str) -> Result<String, JidError> {
    if label.is_empty() {
        return Err(JidError::InvalidDomain);
    }
    let prepared =
        if label.is_ascii() { label.to_ascii_lowercase() } else { stable::<UsernameCaseMapped>(label).ok_or(JidError::InvalidDomain)? };
    let ldh_or_non_ascii = prepared.chars().all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-');
    if !ldh_or_non_ascii || prepared.starts_with('-') || prepared.ends_with('-') || prepared.len() > DOMAIN_LABEL_BYTES_MAX {
        return Err(JidError::InvalidDomain);
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, String, Option<String>) {
        let jid = Jid::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"));
        (jid.local().map(str::to_owned), jid.domain().to_owned(), jid.resource().map(str::to_owned))
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    /// Found by the jid fuzz target: a resource whose preparation (NFC) produced U+00B7
    /// MIDDLE DOT, which the profile then refuses, was accepted once and refused when read
    /// back. Preparation must be stable, so it is refused at once.
    #[test]
    fn preparation_is_stable_or_refused() {
        let found = "akp/r==\u{1ba}F+?\u{5ba}??\u{5ba}/=\u{387}$";
        match Jid::parse(found) {
            Ok(jid) => assert_eq!(Jid::parse(jid.as_str()).map(|again| again.as_str().to_owned()), Ok(jid.as_str().to_owned())),
            Err(error) => assert_eq!(error, JidError::InvalidResource),
        }
        assert_eq!(prepare_resource("a\u{387}b"), Err(JidError::InvalidResource));
        assert_eq!(prepare_resource("l\u{b7}l").as_deref(), Ok("l\u{b7}l"), "MIDDLE DOT in its context stays valid");
        // Found by the same target: fullwidth digits map to an all-numeric domain, which must
        // obey the same rule as ASCII digits (an IPv4 address or nothing).
        assert_eq!(prepare_domain("\u{ff17}"), Err(JidError::InvalidDomain));
        assert_eq!(prepare_domain("\u{ff11}\u{ff10}.0.0.1").as_deref(), Ok("10.0.0.1"));
    }

    #[test]
    fn rfc7622_section_3_5_valid_examples() {
        // (input, localpart, domainpart, resourcepart); "" stands for an absent part.
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, &str)] = &[
            ("juliet@example.com", "juliet", "example.com", ""),
            ("juliet@example.com/foo", "juliet", "example.com", "foo"),
            ("juliet@example.com/foo bar", "juliet", "example.com", "foo bar"),
            ("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"),
            ("foo\\20bar@example.com", "foo\\20bar", "example.com", ""),
            ("fussball@example.com", "fussball", "example.com", ""),
            ("fu\u{DF}ball@example.com", "fu\u{DF}ball", "example.com", ""),
            ("\u{3C0}@example.com", "\u{3C0}", "example.com", ""),
            // Σ is case-mapped to σ; final sigma ς stays as it is (RFC 7622 §3.5 notes).
            ("\u{3A3}@example.com/foo", "\u{3C3}", "example.com", "foo"),
            ("\u{3C3}@example.com/foo", "\u{3C3}", "example.com", "foo"),
            ("\u{3C2}@example.com/foo", "\u{3C2}", "example.com", "foo"),
            ("king@example.com/\u{265A}", "king", "example.com", "\u{265A}"),
            ("example.com", "", "example.com", ""),
            ("example.com/foobar", "", "example.com", "foobar"),
            ("a.example.com/b@example.net", "", "a.example.com", "b@example.net"),
        ];
        let part = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        for &(input, local, domain, resource) in cases {
            let expected = (part(local), domain.to_owned(), part(resource));
            assert_eq!(parts(input), expected, "{input:?}");
        }
    }

    #[test]
    fn rfc7622_section_3_5_invalid_examples() {
        let cases: &[(&str, JidError)] = &[
            ("\"juliet\"@example.com", JidError::InvalidLocal),
            ("foo bar@example.com", JidError::InvalidLocal),
            ("juliet@example.com/", JidError::Empty),
            ("@example.com/", JidError::Empty),
            // U+2163 ROMAN NUMERAL FOUR has a compatibility decomposition: disallowed.
            ("henry\u{2163}@example.com", JidError::InvalidLocal),
            // U+265A BLACK CHESS KING is a symbol: disallowed in the IdentifierClass.
            ("\u{265A}@example.com", JidError::InvalidLocal),
            ("juliet@", JidError::Empty),
            ("/foobar", JidError::Empty),
        ];
        for &(input, error) in cases {
            assert_eq!(Jid::parse(input), Err(error), "{input:?}");
        }
    }

    #[test]
    fn empty_parts_are_rejected() {
        assert_eq!(Jid::parse(""), Err(JidError::Empty));
        assert_eq!(Jid::parse("@example.com"), Err(JidError::Empty));
        assert_eq!(Jid::parse("@"), Err(JidError::Empty));
        assert_eq!(Jid::parse("example.com."), Ok(Jid::parse("example.com").unwrap_or_else(|e| panic!("{e}"))));
        assert_eq!(Jid::parse("."), Err(JidError::Empty));
        assert_eq!(Jid::parse("juliet@."), Err(JidError::Empty));
        assert_eq!(BareJid::new(Some(""), "example.com"), Err(JidError::Empty));
        assert_eq!(prepare_resource(""), Err(JidError::Empty));
    }

    #[test]
    fn localpart_is_case_mapped_and_width_mapped() {
        assert_eq!(prepare_local("Juliet").as_deref(), Ok("juliet"));
        assert_eq!(prepare_local("JULIET").as_deref(), Ok("juliet"));
        // Fullwidth letters map to their ASCII equivalents (RFC 8265 §3.3.1 width mapping).
        assert_eq!(prepare_local("\u{FF2A}uliet").as_deref(), Ok("juliet"));
        let jid = Jid::parse("Juliet@Example.COM/Balcony").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jid.as_str(), "juliet@example.com/Balcony");
        assert_eq!(jid.bare_str(), "juliet@example.com");
    }

    #[test]
    fn localpart_forbids_rfc7622_extra_characters_even_when_width_mapped() {
        for c in LOCAL_FORBIDDEN_CHARS {
            assert_eq!(prepare_local(&format!("a{c}b")), Err(JidError::InvalidLocal), "{c:?}");
        }
        // FULLWIDTH COMMERCIAL AT maps to '@' during preparation.
        assert_eq!(prepare_local("a\u{FF20}b"), Err(JidError::InvalidLocal));
        assert_eq!(prepare_local("a\u{FF0F}b"), Err(JidError::InvalidLocal));
    }

    #[test]
    fn resourcepart_preserves_case_and_allows_slash_and_at() {
        let jid = Jid::parse("juliet@example.com/Foo/Bar@Baz/ x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jid.resource(), Some("Foo/Bar@Baz/ x"));
        assert_eq!(jid.domain(), "example.com");
        assert_eq!(jid.local(), Some("juliet"));
        // Non-ASCII spaces map to U+0020 (RFC 8265 §4.2.1).
        assert_eq!(prepare_resource("a\u{3000}b").as_deref(), Ok("a b"));
        // Control characters are disallowed in the FreeformClass.
        assert_eq!(prepare_resource("a\u{7}b"), Err(JidError::InvalidResource));
    }

    #[test]
    fn at_sign_in_resource_does_not_split_the_local_part() {
        let jid = Jid::parse("example.com/a@b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jid.local(), None);
        assert_eq!(jid.domain(), "example.com");
        assert_eq!(jid.resource(), Some("a@b"));
    }

    #[test]
    fn second_at_sign_lands_in_the_domain_and_is_rejected() {
        assert_eq!(Jid::parse("a@b@example.com"), Err(JidError::InvalidDomain));
    }

    #[test]
    fn part_length_limits() {
        let max = "a".repeat(JID_PART_BYTES_MAX);
        let over = "a".repeat(JID_PART_BYTES_MAX + 1);
        assert!(prepare_local(&max).is_ok());
        assert_eq!(prepare_local(&over), Err(JidError::TooLong));
        assert!(prepare_resource(&max).is_ok());
        assert_eq!(prepare_resource(&over), Err(JidError::TooLong));

        // A domainpart of 1023 bytes: 102 ten-byte "label." pieces and a 3-byte label.
        let domain = format!("{}abc", "bbbbbbbbb.".repeat(102));
        assert_eq!(domain.len(), JID_PART_BYTES_MAX);
        assert!(prepare_domain(&domain).is_ok());
        // The trailing dot is stripped before the length is checked.
        assert!(prepare_domain(&format!("{domain}.")).is_ok());
        assert_eq!(prepare_domain(&format!("{domain}b")), Err(JidError::TooLong));

        let full = format!("{max}@{domain}/{max}");
        let jid = Jid::parse(&full).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(jid.as_str().len(), 3 * JID_PART_BYTES_MAX + 2);
        assert_eq!(Jid::parse(&format!("{over}@example.com")), Err(JidError::TooLong));
        assert_eq!(Jid::parse(&format!("example.com/{over}")), Err(JidError::TooLong));

        // Input that could never prepare short enough is refused before PRECIS runs.
        let huge = "a".repeat(JID_PART_INPUT_BYTES_MAX + 1);
        assert_eq!(prepare_local(&huge), Err(JidError::TooLong));
        assert_eq!(prepare_resource(&huge), Err(JidError::TooLong));
        assert_eq!(prepare_domain(&huge), Err(JidError::TooLong));
    }

    #[test]
    fn length_limit_applies_after_width_mapping() {
        // 1023 fullwidth letters are 3069 bytes of input but prepare to 1023 ASCII bytes.
        let wide = "\u{FF41}".repeat(JID_PART_BYTES_MAX);
        assert_eq!(wide.len(), 3 * JID_PART_BYTES_MAX);
        assert_eq!(prepare_local(&wide).map(|s| s.len()), Ok(JID_PART_BYTES_MAX));
    }

    #[test]
    fn domain_preparation() {
        let ok: &[(&str, &str)] = &[
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("localhost", "localhost"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("B\u{FC}cher.example", "b\u{FC}cher.example"),
            ("\u{FF25}xample.com", "example.com"),
            ("example\u{3002}com", "example.com"),
            ("a-b.c0m", "a-b.c0m"),
            ("192.0.2.1", "192.0.2.1"),
            ("[2001:DB8:0:0::1]", "[2001:db8::1]"),
            ("[::1]", "[::1]"),
        ];
        for &(input, expected) in ok {
            assert_eq!(prepare_domain(input).as_deref(), Ok(expected), "{input:?}");
        }
        let bad: &[&str] = &[
            "example..com",
            "example.com..",
            ".example.com",
            "-example.com",
            "example-.com",
            "exa mple.com",
            "exa_mple.com",
            "exa@mple.com",
            "exa/mple.com",
            "exa:mple.com",
            "exa\u{7}mple.com",
            "exa\u{265A}mple.com",
            "1.2.3",
            "256.1.1.1",
            "010.0.0.1",
            "[::1",
            "[192.0.2.1]",
            "[fe80::1%eth0]",
            "[::1]x",
        ];
        for &input in bad {
            assert_eq!(prepare_domain(input), Err(JidError::InvalidDomain), "{input:?}");
        }
        let long_label = "c".repeat(DOMAIN_LABEL_BYTES_MAX + 1);
        assert_eq!(prepare_domain(&format!("{long_label}.com")), Err(JidError::InvalidDomain));
    }

    #[test]
    fn constructors_and_accessors_agree() {
        let bare = BareJid::new(Some("Romeo"), "Montague.LIT").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.as_str(), "romeo@montague.lit");
        assert_eq!(bare.local(), Some("romeo"));
        assert_eq!(bare.domain(), "montague.lit");
        let full = bare.with_resource("Orchard").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.as_str(), "romeo@montague.lit/Orchard");
        assert_eq!(full.bare(), bare);
        assert_eq!(full.bare_str(), "romeo@montague.lit");
        assert_eq!(full.local(), Some("romeo"));
        assert_eq!(full.domain(), "montague.lit");
        assert_eq!(full.resource(), "Orchard");
        assert_eq!(full.to_string(), "romeo@montague.lit/Orchard");
        assert_eq!(bare.with_resource(""), Err(JidError::Empty));

        let domain_only = BareJid::new(None, "montague.lit").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(domain_only.local(), None);
        assert_eq!(domain_only.domain(), "montague.lit");
        let domain_full = domain_only.with_resource("r").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(domain_full.local(), None);
        assert_eq!(domain_full.bare(), domain_only);

        let jid: Jid = full.clone().into();
        assert_eq!(jid.bare(), bare);
        assert_eq!(jid.to_string(), full.to_string());
        assert_eq!(Jid::from(bare.clone()).resource(), None);
    }

    #[test]
    fn from_str_enforces_the_kind() {
        assert_eq!("juliet@example.com/r".parse::<BareJid>(), Err(JidError::UnexpectedResource));
        assert_eq!("juliet@example.com".parse::<FullJid>(), Err(JidError::MissingResource));
        let bare: BareJid = "Juliet@example.com".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.to_string(), "juliet@example.com");
        let full: FullJid = "juliet@example.com/r".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(full.resource(), "r");
        let any: Jid = "example.com".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(any, Jid::Bare(BareJid::new(None, "example.com").unwrap_or_else(|e| panic!("{e}"))));
    }

    #[test]
    fn equal_addresses_compare_equal_after_preparation() {
        let a = Jid::parse("JULIET@EXAMPLE.COM./x").unwrap_or_else(|e| panic!("{e}"));
        let b = Jid::parse("juliet@example.com/x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        let c = Jid::parse("juliet@example.com/X").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(b, c);
        assert_eq!(some("x"), b.resource().map(str::to_owned));
    }
}
