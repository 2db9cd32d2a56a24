//! A small owned XML element tree and XML escaping, for the stanzas the server handles itself
//! (bind, roster, disco, SASL payloads …) and for the replies it builds.
//!
//! This module owns the tree types ([`Element`], [`Node`]), their serialisation and the escaping
//! rules. It deliberately does not parse: bytes from the network become trees only through
//! [`crate::framer::Stanza::element`], after the framer has checked them against RFC 6120 §11.
//! It is not the hot path either: routed stanzas are forwarded as the framer's borrowed bytes,
//! never through a tree.
//!
//! Names are kept as a local name plus a resolved namespace URI; prefixes are not preserved.
//! Serialisation therefore writes every element unprefixed and declares its namespace with
//! `xmlns='…'` wherever it differs from the parent's (RFC 6120 §4.8.3 allows either form).
//! Attribute names are kept as written, so a prefixed attribute other than `xml:` (whose prefix
//! is predeclared, XML Namespaces §3) would need its declaration re-added by the caller.

use std::borrow::Cow;
use std::fmt::Write as _;

/// An element with its resolved namespace, its attributes and its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The local name, without any prefix.
    pub name: String,
    /// The namespace URI the element's name resolves to; empty when it is in no namespace.
    pub namespace: String,
    /// Attributes as `(qualified name as written, unescaped value)`, in document order.
    /// Namespace declarations (`xmlns`, `xmlns:p`) are not attributes here: they are folded
    /// into the `namespace` of the elements they apply to.
    pub attributes: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub children: Vec<Node>,
}

/// One child of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Unescaped character data; the content of CDATA sections is included as plain text.
    Text(String),
}

impl Element {
    /// An element with no attributes and no children.
    pub fn new(name: &str, namespace: &str) -> Element {
        Element { name: name.to_owned(), namespace: namespace.to_owned(), attributes: Vec::new(), children: Vec::new() }
    }

    /// Builder: adds an attribute (or replaces the value of one with the same name).
    pub fn with_attribute(mut self, name: &str, value: &str) -> Element {
        self.set_attribute(name, value);
        self
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends a text child.
    pub fn with_text(mut self, text: &str) -> Element {
        self.children.push(Node::Text(text.to_owned()));
        self
    }

    /// Sets an attribute, replacing the value of an existing one with the same name.
    pub fn set_attribute(&mut self, name: &str, value: &str) {
        match self.attributes.iter_mut().find(|(key, _)| key == name) {
            Some((_, existing)) => value.clone_into(existing),
            None => self.attributes.push((name.to_owned(), value.to_owned())),
        }
    }

    /// The value of the attribute with this qualified name, as written (`"xml:lang"`).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The first child element with this local name and namespace.
    pub fn child(&self, name: &str, namespace: &str) -> Option<&Element> {
        self.elements().find(|element| element.name == name && element.namespace == namespace)
    }

    /// The child elements, in document order (text children skipped).
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    /// The concatenation of the direct text children (text of descendants not included).
    pub fn text(&self) -> String {
        let mut text = String::new();
        for node in &self.children {
            if let Node::Text(part) = node {
                text.push_str(part);
            }
        }
        text
    }

    /// Serialises the element with escaping. `xmlns='…'` is written on an element whose
    /// namespace differs from its parent's, and on the top element unless its namespace is
    /// empty.
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_xml(&mut out, "");
        out
    }

    /// Appends the serialisation of `self` to `out`, given the namespace in scope as the
    /// default namespace (the parent's; `""` for the top element).
    fn write_xml(&self, out: &mut String, parent_namespace: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.namespace != parent_namespace {
            // An element in no namespace under a namespaced parent needs the default namespace
            // undeclared (XML Namespaces §6.2), which `xmlns=''` does.
            let _ = write!(out, " xmlns='{}'", escape_attribute(&self.namespace));
        }
        for (name, value) in &self.attributes {
            let _ = write!(out, " {}='{}'", name, escape_attribute(value));
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for node in &self.children {
            match node {
                Node::Element(child) => child.write_xml(out, &self.namespace),
                Node::Text(text) => out.push_str(&escape_text(text)),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }
}

/// Appends ` name='value'` (escaped) to a stanza being written by hand.
pub fn push_attribute(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    out.push_str(&escape_attribute(value));
    out.push('\'');
}

/// Escapes character data: `&`, `<` and `>` (the last so that `]]>` can never appear,
/// XML 1.0 §2.4). Borrows when nothing needs escaping.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, |byte| matches!(byte, b'&' | b'<' | b'>'))
}

/// Escapes an attribute value for either quote style: `&`, `<`, `>`, `'` and `"`.
/// Borrows when nothing needs escaping.
pub fn escape_attribute(s: &str) -> Cow<'_, str> {
    escape(s, |byte| matches!(byte, b'&' | b'<' | b'>' | b'\'' | b'"'))
}

/// Replaces every byte selected by `special` with its predefined entity reference.
fn escape(s: &str, special: impl Fn(u8) -> bool) -> Cow<'_, str> {
    let Some(first) = s.bytes().position(&special) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 16);
    out.push_str(&s[..first]);
    // Only ASCII characters are special, so splitting at them keeps every slice on a
    // character boundary.
    let mut copied = first;
    for (index, byte) in s.bytes().enumerate().skip(first) {
        if !special(byte) {
            continue;
        }
        out.push_str(&s[copied..index]);
        out.push_str(match byte {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'\'' => "&apos;",
            _ => "&quot;",
        });
        copied = index + 1;
    }
    out.push_str(&s[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_borrows_when_clean_and_escapes_specials() {
        assert!(matches!(escape_text("plain text"), Cow::Borrowed(_)));
        assert!(matches!(escape_attribute("user@example.com/res"), Cow::Borrowed(_)));
        assert_eq!(escape_text("a<b>&c'\""), "a&lt;b&gt;&amp;c'\"");
        assert_eq!(escape_attribute("é<'\">&"), "é&lt;&apos;&quot;&gt;&amp;");
        assert_eq!(escape_text("]]>"), "]]&gt;");
    }

    #[test]
    fn accessors_find_attributes_children_and_text() {
        let element = Element::new("iq", "jabber:client")
            .with_attribute("type", "result")
            .with_attribute("type", "get")
            .with_text("a")
            .with_child(Element::new("query", "jabber:iq:roster"))
            .with_child(Element::new("query", "other"))
            .with_text("b");
        assert_eq!(element.attribute("type"), Some("get"));
        assert_eq!(element.attributes.len(), 1);
        assert_eq!(element.attribute("id"), None);
        assert_eq!(element.elements().count(), 2);
        assert_eq!(element.child("query", "other").map(|child| child.namespace.as_str()), Some("other"));
        assert!(element.child("query", "nope").is_none());
        assert_eq!(element.text(), "ab");
    }

    #[test]
    fn to_xml_declares_namespaces_only_where_they_change() {
        let element = Element::new("iq", "jabber:client")
            .with_attribute("to", "a'b&c")
            .with_child(
                Element::new("query", "jabber:iq:roster").with_child(Element::new("item", "jabber:iq:roster").with_attribute("jid", "x@y")),
            )
            .with_child(Element::new("plain", ""))
            .with_child(Element::new("body", "jabber:client").with_text("1 < 2 & 3"));
        assert_eq!(
            element.to_xml(),
            "<iq xmlns='jabber:client' to='a&apos;b&amp;c'>\
             <query xmlns='jabber:iq:roster'><item jid='x@y'/></query>\
             <plain xmlns=''/>\
             <body>1 &lt; 2 &amp; 3</body></iq>"
        );
        assert_eq!(Element::new("a", "").to_xml(), "<a/>");
    }
}
