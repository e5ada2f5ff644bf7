//! The JSON form QA teams read and write: `{"mti":"0100","fields":{"2":"4111…"}}`,
//! field numbers as strings in ascending order, text and numeric fields as their
//! text, binary fields as uppercase hex. `parse` prints it, `build` reads it.
//! A composite field is an object of its subfields in wire order,
//! `"48": {"22": "…", "33": "…"}`, nested composites nesting further; `build`
//! also takes a plain string for a composite field as its raw content (text, or
//! hex when the field's class is `b`).

use serde_json::{Map, Value};

use super::composite::{Composite, SubValue};
use super::composite_spec::CompositeSpec;
use super::encoding::hex;
use super::error::CodecError;
use super::message::{is_data_field, Message, Mti};
use super::spec::{Field, Spec};

/// Why a JSON document is not a message for this spec.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("expected a JSON object with \"mti\" and \"fields\", found {0}")]
    Shape(String),
    #[error("unknown key {0:?}: expected only \"mti\" and \"fields\"")]
    UnknownKey(String),
    #[error("mti: expected four digits as a string, found {0}")]
    Mti(String),
    #[error("field {field}: {message}")]
    Field { field: String, message: String },
    /// A composite's subfields do not encode.
    #[error("{0}")]
    Subfield(#[from] CodecError),
}

fn field_error(field: &str, message: impl Into<String>) -> JsonError {
    JsonError::Field {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Whether the spec says field `n` is binary (shown as hex in JSON).
fn is_binary(spec: &Spec, n: u8) -> bool {
    spec.field(n).is_some_and(|f| f.class.is_binary())
}

/// A value as JSON text: binary (and any value that is not text) as uppercase hex.
fn value_text(value: &[u8], binary: bool) -> Value {
    Value::String(match std::str::from_utf8(value) {
        Ok(text) if !binary => text.to_string(),
        _ => hex::to_string(value),
    })
}

/// The JSON object of a composite's subfields, in the order given.
fn composite_json(spec: &CompositeSpec, value: &Composite) -> Value {
    let mut out = Map::new();
    for entry in value.entries() {
        let sub = spec.subfield(&entry.id);
        let json = match (&entry.value, sub.and_then(|s| s.field.composite.as_deref())) {
            (SubValue::Composite(c), Some(nested)) => composite_json(nested, c),
            (SubValue::Composite(c), None) => composite_json(spec, c),
            (SubValue::Value(v), _) => {
                value_text(v, sub.is_some_and(|s| s.field.class.is_binary()))
            }
        };
        out.insert(entry.id.clone(), json);
    }
    Value::Object(out)
}

/// The JSON form of a message. Binary fields (and any value that is not text)
/// are uppercase hex; composite fields are objects of their subfields, or their
/// raw content as a string when the subfields do not decode (check them first
/// with [`Message::check_subfields`] to refuse such a message).
pub fn to_json(spec: &Spec, msg: &Message) -> Value {
    let mut fields = Map::new();
    for (n, value) in msg.iter() {
        let composite = spec.field(n).and_then(|f| f.composite.as_deref());
        let json = match composite.map(|c| (c, msg.subfields(spec, n))) {
            Some((c, Ok(Some(subfields)))) => composite_json(c, &subfields),
            _ => value_text(value, is_binary(spec, n)),
        };
        fields.insert(n.to_string(), json);
    }
    let mut doc = Map::new();
    doc.insert("mti".into(), Value::String(msg.mti().to_string()));
    doc.insert("fields".into(), Value::Object(fields));
    Value::Object(doc)
}

/// Reads a message from JSON text.
pub fn from_json_str(spec: &Spec, text: &str) -> Result<Message, JsonError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JsonError::Syntax {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    from_json(spec, &value)
}

/// Reads a message from its JSON form. Every field must be one the spec defines;
/// lengths and content are checked when the message is encoded.
pub fn from_json(spec: &Spec, value: &Value) -> Result<Message, JsonError> {
    let Value::Object(doc) = value else {
        return Err(JsonError::Shape(kind_of(value).into()));
    };
    if let Some(key) = doc.keys().find(|k| *k != "mti" && *k != "fields") {
        return Err(JsonError::UnknownKey(key.clone()));
    }
    let mti = match doc.get("mti") {
        Some(Value::String(s)) => s
            .parse::<Mti>()
            .map_err(|_| JsonError::Mti(format!("{s:?}")))?,
        Some(other) => return Err(JsonError::Mti(kind_of(other).into())),
        None => return Err(JsonError::Mti("nothing".into())),
    };
    let mut msg = Message::new(mti);
    let fields = match doc.get("fields") {
        Some(Value::Object(fields)) => fields,
        Some(other) => {
            return Err(JsonError::Shape(format!(
                "\"fields\" as {}",
                kind_of(other)
            )));
        }
        None => return Ok(msg),
    };
    for (key, value) in fields {
        let n = key
            .parse::<u8>()
            .ok()
            .filter(|&n| is_data_field(n))
            .ok_or_else(|| {
                field_error(
                    key,
                    "expected a field number 2-192 other than 65 (bitmaps are computed)",
                )
            })?;
        if spec.field(n).is_none() {
            return Err(field_error(
                key,
                format!("the spec {:?} does not define it", spec.name),
            ));
        }
        let field = spec.field(n);
        if let (Value::Object(object), Some(composite)) =
            (value, field.and_then(|f| f.composite.as_deref()))
        {
            let subfields = composite_from_json(composite, key, object)?;
            msg.set_subfields(spec, n, &subfields)?;
            continue;
        }
        let bytes = plain_value(field, key, value)?;
        msg.set(n, bytes)
            .map_err(|e| field_error(key, e.to_string()))?;
    }
    Ok(msg)
}

/// The bytes of a field or subfield given as a JSON string: hex for class `b`.
fn plain_value(field: Option<&Field>, key: &str, value: &Value) -> Result<Vec<u8>, JsonError> {
    let Value::String(text) = value else {
        let composite = field.is_some_and(|f| f.composite.is_some());
        return Err(field_error(
            key,
            format!(
                "expected a string{}, found {} (numbers must be strings to keep leading zeros)",
                if composite {
                    " or an object of subfields"
                } else {
                    ""
                },
                kind_of(value)
            ),
        ));
    };
    if !field.is_some_and(|f| f.class.is_binary()) {
        return Ok(text.as_bytes().to_vec());
    }
    let mut bytes = Vec::with_capacity(text.len() / 2);
    hex::decode_into(text.as_bytes(), &mut bytes).map_err(|i| {
        field_error(
            key,
            format!("expected hex (binary field), bad character at position {i}"),
        )
    })?;
    Ok(bytes)
}

/// A composite from its JSON object, subfields in the object's order; `path`
/// is the composite's dotted id for errors.
fn composite_from_json(
    spec: &CompositeSpec,
    path: &str,
    object: &Map<String, Value>,
) -> Result<Composite, JsonError> {
    let mut out = Composite::new();
    for (id, value) in object {
        let sub_path = format!("{path}.{id}");
        let sub = spec.subfield(id).ok_or_else(|| {
            let known: Vec<&str> = spec.subfields.iter().map(|s| s.id.as_str()).collect();
            field_error(
                &sub_path,
                format!("no such subfield: expected one of {}", known.join(", ")),
            )
        })?;
        let value = match (value, sub.field.composite.as_deref()) {
            (Value::Object(inner), Some(nested)) => {
                SubValue::Composite(composite_from_json(nested, &sub_path, inner)?)
            }
            _ => SubValue::Value(plain_value(Some(&sub.field), &sub_path, value)?),
        };
        out.push(id.clone(), value);
    }
    Ok(out)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::from_toml_str(
            r#"
name = "t"
mti_encoding = "ascii"
bitmap_encoding = "binary"
[defaults]
numeric = "ascii"
text = "ascii"
binary = "binary"
prefix = "ascii"
[fields.2]
name = "PAN"
length = "LL"
max = 19
class = "n"
[fields.3]
name = "Processing code"
max = 6
class = "n"
[fields.52]
name = "PIN block"
max = 8
class = "b"
"#,
            "t",
        )
        .expect("valid spec")
    }

    #[test]
    fn prints_fields_in_numeric_order_with_binary_as_hex() {
        let spec = spec();
        let mut msg = Message::new(Mti::from_static("0100"));
        msg.set(52, [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF])
            .expect("field");
        msg.set(3, "000000").expect("field");
        msg.set(2, "4111111111111111").expect("field");
        let text = to_json(&spec, &msg).to_string();
        assert_eq!(
            text,
            r#"{"mti":"0100","fields":{"2":"4111111111111111","3":"000000","52":"0123456789ABCDEF"}}"#
        );
        assert_eq!(from_json_str(&spec, &text).expect("reads back"), msg);
    }

    #[test]
    fn errors_name_the_field() {
        let spec = spec();
        let cases = [
            (r#"{"mti":"0100","fields":{"4":"1"}}"#, "field 4: the spec"),
            (
                r#"{"mti":"0100","fields":{"3":0}}"#,
                "field 3: expected a string",
            ),
            (
                r#"{"mti":"0100","fields":{"52":"XYZ0"}}"#,
                "field 52: expected hex",
            ),
            (
                r#"{"mti":"0100","fields":{"1":"00"}}"#,
                "field 1: expected a field number",
            ),
            (r#"{"mti":"100","fields":{}}"#, "mti: expected four digits"),
            (r#"{"mti":"0100","extra":1}"#, "unknown key \"extra\""),
            (r#"{"mti":"0100","#, "invalid JSON at line 1"),
            (r#"[1]"#, "expected a JSON object"),
        ];
        for (input, expected) in cases {
            let err = from_json_str(&spec, input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
