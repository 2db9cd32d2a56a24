//! XMPP date and time: the XEP-0082 DateTime profile and XEP-0203 delayed-delivery stamps.
//!
//! This module owns the conversion between Unix milliseconds and XEP-0082 DateTime text (hand
//! written civil-date arithmetic after Howard Hinnant's `days_from_civil` / `civil_from_days`,
//! so no calendar crate is needed), the `<delay/>` element of XEP-0203, and stamping a
//! serialised stanza with one (offline storage, XEP-0160).
//!
//! It deliberately owns no clock: every instant comes in as Unix milliseconds (UTC) from the
//! caller, as everywhere in this sans-I/O crate. Only the DateTime profile is handled (not the
//! Date or Time profiles of XEP-0082 §3.1/§3.3), and instants before the Unix epoch are out of
//! range because the rest of the server counts time as `u64` milliseconds.

use crate::xml::Element;

/// The XEP-0203 delayed delivery namespace.
pub const DELAY_NAMESPACE: &str = "urn:xmpp:delay";

/// Milliseconds in one civil day (no leap seconds: Unix time, like XEP-0082, ignores them).
const DAY_MS: i64 = 86_400_000;

/// Formats an instant as an XEP-0082 DateTime in UTC with milliseconds:
/// `"2026-11-28T20:19:40.123Z"` (XEP-0082 §3.2; XEP-0203 §2 requires UTC with `Z`).
pub fn format_timestamp(unix_ms: u64) -> String {
    // u64::MAX / DAY_MS is about 2.1e11, far inside i64, so these conversions are exact.
    let days = (unix_ms / DAY_MS as u64) as i64;
    let time_of_day_ms = unix_ms % DAY_MS as u64;
    let (year, month, day) = civil_from_days(days);
    let seconds = time_of_day_ms / 1000;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        year,
        month,
        day,
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        time_of_day_ms % 1000
    )
}

/// Parses an XEP-0082 DateTime, `CCYY-MM-DDThh:mm:ss[.sss]TZD` (XEP-0082 §3.2): fractional
/// seconds of any length (digits past milliseconds are truncated), `TZD` either `Z` or
/// `±hh:mm`. Returns Unix milliseconds, or `None` when the text is not such a DateTime, names
/// an impossible date or time (month 13, 30 February, hour 24, leap second 60), or lies before
/// the Unix epoch.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    // Fixed part: "CCYY-MM-DDThh:mm:ss" is 19 bytes; every separator is checked.
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[10] != b'T' || bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    let hour = digits(&bytes[11..13])?;
    let minute = digits(&bytes[14..16])?;
    let second = digits(&bytes[17..19])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }

    let mut rest = &bytes[19..];
    let mut fraction_ms = 0;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let fraction_len = after_dot.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if fraction_len == 0 {
            return None;
        }
        // Milliseconds are the first three digits, padded on the right: ".5" is 500 ms.
        for place in 0..3 {
            fraction_ms *= 10;
            if let Some(digit) = after_dot.get(place).filter(|_| place < fraction_len) {
                fraction_ms += i64::from(digit - b'0');
            }
        }
        rest = &after_dot[fraction_len..];
    }

    let offset_ms = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let offset_hours = digits(&[*h1, *h2])?;
            let offset_minutes = digits(&[*m1, *m2])?;
            if offset_hours > 23 || offset_minutes > 59 {
                return None;
            }
            let magnitude = (offset_hours * 60 + offset_minutes) * 60_000;
            // A local time ahead of UTC (+hh:mm) is that much later than the UTC instant.
            if *sign == b'+' {
                magnitude
            } else {
                -magnitude
            }
        }
        _ => return None,
    };

    let local_ms = days_from_civil(year, month, day) * DAY_MS + ((hour * 60 + minute) * 60 + second) * 1000 + fraction_ms;
    u64::try_from(local_ms - offset_ms).ok()
}

/// An XEP-0203 §2 delay element: `<delay xmlns='urn:xmpp:delay' from='…' stamp='…'>reason</delay>`.
/// `from` is the entity that delayed the stanza (for offline storage, the server's domain).
pub fn delay_element(from: &str, stamp_ms: u64, reason: Option<&str>) -> Element {
    let element = Element::new("delay", DELAY_NAMESPACE).with_attribute("from", from).with_attribute("stamp", &format_timestamp(stamp_ms));
    match reason {
        Some(reason) if !reason.is_empty() => element.with_text(reason),
        _ => element,
    }
}

/// Appends a `<delay/>` (no reason text) as the last child of a serialised stanza and returns
/// the new bytes; used when offline messages are delivered (XEP-0160; XEP-0203 §3, first example).
///
/// `stanza` is one complete element as written by [`Element::to_xml`] or received through the
/// framer: either `<message …>…</message>` or the self-closing `<message …/>`. Bytes that are
/// neither (which the server never produces) are returned unchanged rather than mangled.
/// An existing `<delay/>` is not looked for: the server stamps only stanzas it stored itself.
pub fn with_delay(stanza: &[u8], from: &str, stamp_ms: u64) -> Vec<u8> {
    let delay = delay_element(from, stamp_ms, None).to_xml();
    let end = stanza.len() - stanza.iter().rev().take_while(|byte| byte.is_ascii_whitespace()).count();
    let element = &stanza[..end];
    if !element.starts_with(b"<") || !element.ends_with(b">") {
        return stanza.to_vec();
    }
    let mut out = Vec::with_capacity(stanza.len() + delay.len() + 16);
    if element.ends_with(b"/>") {
        // Self-closing root: no "/>" can end a complete element with children, whose last
        // bytes are its end tag. Reopen it and close it with an end tag of the same name.
        let name_len = element[1..].iter().take_while(|byte| !matches!(byte, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')).count();
        if name_len == 0 {
            return stanza.to_vec();
        }
        out.extend_from_slice(&element[..element.len() - 2]);
        out.push(b'>');
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(b"</");
        out.extend_from_slice(&element[1..1 + name_len]);
        out.push(b'>');
        return out;
    }
    // With children, the root's end tag is the last "</": only its name and '>' follow it.
    let Some(end_tag) = element.windows(2).rposition(|pair| pair == b"</") else {
        return stanza.to_vec();
    };
    out.extend_from_slice(&element[..end_tag]);
    out.extend_from_slice(delay.as_bytes());
    out.extend_from_slice(&element[end_tag..]);
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`): the
/// year is shifted to start in March so that the leap day is the last day of the year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400; // [0, 399]
    let month_from_march = if month > 2 { month - 3 } else { month + 9 }; // [0, 11]
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year; // [0, 146096]
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Hinnant's `civil_from_days`):
/// `(year, month 1–12, day 1–31)`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468; // days since 0000-03-01
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097; // [0, 146096]
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The value of a run of ASCII digits; `None` if any byte is not a digit.
fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |value, byte| byte.is_ascii_digit().then(|| value * 10 + i64::from(byte - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::parse_element;

    #[test]
    fn formats_epoch_and_known_instants() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_timestamp(1_795_897_180_123), "2026-11-28T20:19:40.123Z");
        // The instant of the XEP-0203 §3 examples.
        assert_eq!(format_timestamp(1_031_699_305_000), "2002-09-10T23:08:25.000Z");
        assert_eq!(format_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_timestamp(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_utc_offsets_and_fractions() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2026-11-28T20:19:40.123Z"), Some(1_795_897_180_123));
        assert_eq!(parse_timestamp("2002-09-10T23:08:25Z"), Some(1_031_699_305_000));
        // Offsets: the same instant written in other zones (XEP-0082 §3.2).
        assert_eq!(parse_timestamp("2002-09-10T18:08:25-05:00"), Some(1_031_699_305_000));
        assert_eq!(parse_timestamp("2002-09-11T04:38:25+05:30"), Some(1_031_699_305_000));
        assert_eq!(parse_timestamp("2002-09-10T23:08:25-00:00"), Some(1_031_699_305_000));
        // Fractions of any length, truncated to milliseconds and padded on the right.
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.05Z"), Some(50));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.123456789Z"), Some(1123));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.999999+00:00"), Some(999));
    }

    #[test]
    fn leap_years_and_month_lengths() {
        assert_eq!(parse_timestamp("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert!(parse_timestamp("2024-02-29T12:00:00Z").is_some());
        assert_eq!(parse_timestamp("1900-02-29T00:00:00Z"), None, "1900 is not a leap year");
        assert_eq!(parse_timestamp("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2100-02-29T00:00:00Z"), None);
        assert_eq!(parse_timestamp("2024-04-31T00:00:00Z"), None);
        assert!(parse_timestamp("2024-12-31T23:59:59Z").is_some());
        assert_eq!(parse_timestamp("2024-02-28T23:59:59.999Z").map(|ms| ms + 1), parse_timestamp("2024-02-29T00:00:00Z"));
    }

    #[test]
    fn rejects_invalid_text() {
        for text in [
            "",
            "2024-01-01",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-1-01T00:00:00Z",
            "2024-00-10T00:00:00Z",
            "2024-13-10T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-01-32T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:60:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.12a4Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T00:00:00+01:60",
            "2024-01-01T00:00:00ZZ",
            "2024-01-01T00:00:00z",
            "+024-01-01T00:00:00Z",
            "2024-01-01T00:00:00Z ",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "２０２4-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text:?}");
        }
    }

    #[test]
    fn round_trips_across_many_days() {
        // Every day boundary over several centuries, plus an odd time of day: covers each
        // month length, the 100- and 400-year leap rules and the March-based era arithmetic.
        let mut ms: u64 = 0;
        while ms < 253_402_300_800_000 {
            for instant in [ms, ms + 45_296_789] {
                let text = format_timestamp(instant);
                assert_eq!(parse_timestamp(&text), Some(instant), "{text}");
            }
            ms += 13 * DAY_MS as u64 + 7;
        }
        for days in [0, 59, 60, 365, 10_956, 11_016, 11_017, 47_541, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }

    #[test]
    fn delay_element_carries_stamp_from_and_reason() {
        assert_eq!(
            delay_element("capulet.com", 1_031_699_305_000, Some("Offline Storage")).to_xml(),
            "<delay xmlns='urn:xmpp:delay' from='capulet.com' stamp='2002-09-10T23:08:25.000Z'>\
             Offline Storage</delay>"
        );
        assert_eq!(
            delay_element("capulet.com", 0, None).to_xml(),
            "<delay xmlns='urn:xmpp:delay' from='capulet.com' stamp='1970-01-01T00:00:00.000Z'/>"
        );
    }

    #[test]
    fn with_delay_appends_to_an_element_with_children() {
        let stanza = b"<message xmlns='jabber:client' to='juliet@capulet.lit' type='chat'>\
                       <body>a&lt;/b&gt;c</body></message>";
        let out = with_delay(stanza, "capulet.lit", 1_000);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "<message xmlns='jabber:client' to='juliet@capulet.lit' type='chat'>\
             <body>a&lt;/b&gt;c</body>\
             <delay xmlns='urn:xmpp:delay' from='capulet.lit' stamp='1970-01-01T00:00:01.000Z'/>\
             </message>"
        );
        let element = parse_element(text.as_bytes()).expect("parses");
        let delay = element.child("delay", DELAY_NAMESPACE).expect("delay child");
        assert_eq!(delay.attribute("stamp"), Some("1970-01-01T00:00:01.000Z"));
        assert_eq!(element.child("body", "jabber:client").map(Element::text).as_deref(), Some("a</b>c"));
    }

    #[test]
    fn with_delay_reopens_a_self_closing_element() {
        for stanza in [&b"<message to='a@b' id='x/>y'/>"[..], b"<message to='a@b' id='x/>y' />\n", b"<message\tto='a@b'\r\nid='x/>y'/>"] {
            let out = with_delay(stanza, "b", 0);
            let element = parse_element(&out).expect("parses");
            assert_eq!(element.name, "message");
            assert_eq!(element.attribute("id"), Some("x/>y"));
            assert_eq!(element.elements().count(), 1);
            assert!(element.child("delay", DELAY_NAMESPACE).is_some());
            assert!(out.ends_with(b"/></message>"));
        }
        let bare = with_delay(b"<message/>", "b", 0);
        assert_eq!(bare, b"<message><delay xmlns='urn:xmpp:delay' from='b' stamp='1970-01-01T00:00:00.000Z'/></message>");
    }

    #[test]
    fn with_delay_keeps_bytes_it_cannot_understand() {
        assert_eq!(with_delay(b"", "b", 0), b"");
        assert_eq!(with_delay(b"not xml", "b", 0), b"not xml");
        assert_eq!(with_delay(b"</>", "b", 0), b"</>");
    }
}
