//! PostgreSQL types Runnel stores as text: `json`, `jsonb` and `uuid`.
//!
//! Each is an Arrow `Utf8` column marked by its field's extension name (Arrow's canonical
//! `arrow.json` for `json`; `runnel.jsonb`, `runnel.uuid`), so clients are told the type's
//! own OID, casts and functions know what they hold, and a cast to plain text drops the mark.
//! A value is kept in one canonical text form — `jsonb`'s normal form, a `uuid` in lowercase
//! with hyphens — so that equal values are equal text, compare and sort as PostgreSQL's do,
//! and print as PostgreSQL prints them.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use arrow_schema::extension::EXTENSION_TYPE_NAME_KEY;

use crate::error::{Error, Result};
use crate::sql::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextType {
    Json,
    Jsonb,
    Uuid,
}

impl TextType {
    pub fn extension_name(self) -> &'static str {
        match self {
            TextType::Json => "arrow.json",
            TextType::Jsonb => "runnel.jsonb",
            TextType::Uuid => "runnel.uuid",
        }
    }

    /// The type's PostgreSQL name.
    pub fn name(self) -> &'static str {
        match self {
            TextType::Json => "json",
            TextType::Jsonb => "jsonb",
            TextType::Uuid => "uuid",
        }
    }

    /// The type's OID in `pg_type`.
    pub fn oid(self) -> i32 {
        match self {
            TextType::Json => 114,
            TextType::Jsonb => 3802,
            TextType::Uuid => 2950,
        }
    }

    pub fn is_json(self) -> bool {
        matches!(self, TextType::Json | TextType::Jsonb)
    }

    /// The type `field` is marked as, if it is a text field marked as one.
    pub fn of(field: &Field) -> Option<TextType> {
        if !matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return None;
        }
        match field.metadata().get(EXTENSION_TYPE_NAME_KEY)?.as_str() {
            "arrow.json" => Some(TextType::Json),
            "runnel.jsonb" => Some(TextType::Jsonb),
            "runnel.uuid" => Some(TextType::Uuid),
            _ => None,
        }
    }

    /// The marks of a field of this type.
    pub fn metadata(self) -> HashMap<String, String> {
        HashMap::from([(
            EXTENSION_TYPE_NAME_KEY.to_string(),
            self.extension_name().to_string(),
        )])
    }

    /// A nullable field of this type named `name`.
    pub fn field(self, name: &str) -> FieldRef {
        Arc::new(Field::new(name, DataType::Utf8, true).with_metadata(self.metadata()))
    }

    /// `text` read as a value of this type: `None` if the text is already its canonical
    /// form, the canonical form if it differs; 22P02 with PostgreSQL's message if it is no
    /// such value.
    pub fn input(self, text: &str) -> Result<Option<String>> {
        match self {
            TextType::Json => json::parse(text).map(|_| None),
            TextType::Jsonb => json::parse(text).map(|v| Some(v.to_jsonb())),
            TextType::Uuid => {
                let canonical = uuid(text).ok_or_else(|| {
                    Error::data(
                        "22P02",
                        format!("invalid input syntax for type uuid: \"{text}\""),
                    )
                })?;
                Ok((canonical != text).then_some(canonical))
            }
        }
    }
}

/// A UUID in the forms PostgreSQL reads (upper or lower case, in braces or not, hyphens
/// after any group of four digits or none), written lowercase in 8-4-4-4-12 groups.
fn uuid(text: &str) -> Option<String> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut digits = String::with_capacity(32);
    let mut since_hyphen = 0;
    for c in inner.chars() {
        if c == '-' {
            if since_hyphen < 4 || since_hyphen % 4 != 0 || digits.len() == 32 {
                return None;
            }
            since_hyphen = 0;
            continue;
        }
        if !c.is_ascii_hexdigit() || digits.len() == 32 {
            return None;
        }
        digits.push(c.to_ascii_lowercase());
        since_hyphen += 1;
    }
    if digits.len() != 32 {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    ))
}

/// The 16 bytes of a canonical UUID (PostgreSQL's binary form).
pub fn uuid_bytes(canonical: &str) -> Option<[u8; 16]> {
    let digits: String = canonical.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A UUID's canonical text from its 16 bytes.
pub fn uuid_text(bytes: &[u8]) -> Option<String> {
    if bytes.len() != 16 {
        return None;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    uuid(&hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_read_in_postgres_forms() {
        let canonical = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for form in [
            canonical,
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(uuid(form).as_deref(), Some(canonical), "{form}");
        }
        for bad in [
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "a0eeb-c999c0b4ef8bb6d6bb9bd380a11",
            "g0eebc999c0b4ef8bb6d6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "",
        ] {
            assert_eq!(uuid(bad), None, "{bad}");
        }
        let bytes = uuid_bytes(canonical).unwrap();
        assert_eq!(bytes[0], 0xa0);
        assert_eq!(uuid_text(&bytes).as_deref(), Some(canonical));
        assert_eq!(TextType::Uuid.input(canonical).unwrap(), None);
    }
}
