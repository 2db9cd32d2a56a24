//! XEP-0004 data forms: the pieces every form-using service shares (the namespace, building a
//! field with its values and options, the boolean datatype). Each service (MUC configuration,
//! PEP node configuration, archive queries) keeps its own fields and their meaning.

use crate::xml::Element;

pub const DATA_FORMS_NAMESPACE: &str = "jabber:x:data";

/// `<field var=… type=… label=…><value/>…</field>`; `kind` and `label` only when given.
pub fn field(var: &str, kind: Option<&str>, label: Option<&str>, values: &[&str]) -> Element {
    let mut element = Element::new("field", DATA_FORMS_NAMESPACE).with_attribute("var", var);
    if let Some(kind) = kind {
        element.set_attribute("type", kind);
    }
    if let Some(label) = label {
        element.set_attribute("label", label);
    }
    for value in values {
        element = element.with_child(Element::new("value", DATA_FORMS_NAMESPACE).with_text(value));
    }
    element
}

/// `<option><value>…</value></option>` of a list field.
pub fn option(value: &str) -> Element {
    Element::new("option", DATA_FORMS_NAMESPACE).with_child(Element::new("value", DATA_FORMS_NAMESPACE).with_text(value))
}

/// A boolean as a form value ("1"/"0").
pub fn boolean_value(value: bool) -> &'static str {
    if value {
        "1"
    } else {
        "0"
    }
}

/// An XML Schema boolean (XEP-0004 §3.3 `boolean`): "1"/"true"/"0"/"false", surrounding
/// white space ignored.
pub fn parse_boolean(value: &str) -> Option<bool> {
    match value.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_and_fields() {
        assert_eq!(parse_boolean(" true "), Some(true));
        assert_eq!(parse_boolean("0"), Some(false));
        assert_eq!(parse_boolean("yes"), None);
        assert_eq!(boolean_value(true), "1");
        let f = field("v", Some("boolean"), None, &["1"]).with_child(option("x"));
        assert_eq!(
            f.to_xml(),
            "<field xmlns='jabber:x:data' var='v' type='boolean'><value>1</value><option><value>x</value></option></field>"
        );
    }
}
