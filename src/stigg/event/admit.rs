//! The receiver's reads of a payload without its whole tree: [`WebhookPayload::admit`], the parse
//! of a body it may accept, refused or accepted exactly as the processor's full parse
//! ([`WebhookPayload::parse`], a `serde_json::Value` tree) would refuse or accept it, but with only
//! the top-level fields [`WebhookPayload`]'s methods read built; and
//! [`WebhookPayload::identify`], the key and type of a body too large to accept.
//!
//! Why: the receiver reads six fields of a webhook and queues its bytes untouched; building the
//! whole tree (every key and string copied, every object an index map, all of it freed again) was
//! the largest piece of the receiver's own CPU per event (BENCHMARKS.md, A/B of this parse).
//!
//! Why it refuses exactly what the tree refuses: every value goes through the same
//! `deserialize_any` a `Value` does, so serde_json applies the same checks (UTF-8, escapes and
//! lone surrogates, numbers out of range, nesting depth, trailing characters); [`Checked`] only
//! keeps nothing. The one way a `Value` reads an object differently is serde_json's private token
//! keys (with its `raw_value` feature, `{"$serde_json::private::RawValue": "…"}` is read as the
//! JSON inside the string): a key starting with `$serde_json::private::` stops this parse, and so
//! does any error, and the full parse then decides (the error it reports is the tree's own).
//! `tests.rs` (the readers' edge cases) and `tests/properties.rs` (any JSON, broken or not) hold
//! both parses to the same answer. Skipping with serde's `IgnoredAny` instead would not: serde_json
//! skips strings without checking escapes or UTF-8, and numbers without their range.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{EventType, IdempotencyKey, PayloadError, WebhookPayload};

/// The top-level fields the methods of [`WebhookPayload`] read: the type, the key's sources,
/// the trace id, the timestamp, and the customer and entity ids (the FIFO group).
const READ: [&str; 9] =
    ["type", "messageId", "eventId", "traceId", "timestamp", "id", "customerId", "entityId", "customer"];

/// What serde_json's `Value` reads specially as an object's key.
const PRIVATE_KEY_PREFIX: &str = "$serde_json::private::";

impl WebhookPayload {
    /// Parses and validates a raw body as [`WebhookPayload::parse`] does (same result, same
    /// error), building only the fields the receiver reads: `fields` then holds those of the
    /// top-level fields that are present, each whole.
    pub fn admit(raw: &[u8]) -> Result<Self, PayloadError> {
        match serde_json::from_slice::<TopLevel>(raw) {
            Ok(TopLevel(fields)) => {
                super::refuse_unsupported_characters(raw)?;
                Self::from_fields(fields, raw)
            }
            // Not an object, an error, or a private key: the full parse says which, as it would.
            Err(_) => Self::parse(raw),
        }
    }

    /// The key and type of a body too large to accept, read without building its tree (a
    /// 6 MB body parsed into a `Value` would take tens of MB of a 128 MB function): for the log
    /// line that lets an operator ask Stigg for the event. `None` when the body is not a flat
    /// object with a string `type`. Ids that are not strings are skipped, never built, as every
    /// other field is.
    pub fn identify(raw: &[u8]) -> Option<(IdempotencyKey, String)> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            event_type: String,
            #[serde(rename = "messageId", default)]
            message_id: IdField,
            #[serde(rename = "eventId", default)]
            event_id: IdField,
        }
        // serde's derived struct also reads an array by position.
        if raw.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        let envelope: Envelope = serde_json::from_slice(raw).ok()?;
        let id = [envelope.message_id.0, envelope.event_id.0].into_iter().flatten().find(|s| !s.is_empty());
        let key = match id {
            Some(id) => IdempotencyKey::parse(&id).ok()?,
            None => IdempotencyKey::from_body(raw),
        };
        let event_type = EventType::parse(&envelope.event_type).ok()?.to_string();
        Some((key, event_type))
    }
}

/// The top-level object's read fields. Anything but an object is an error here (the full parse
/// then says which).
struct TopLevel(Map<String, Value>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = TopLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
                let mut fields = Map::new();
                while let Some(Key(read)) = map.next_key()? {
                    match read {
                        Some(name) => {
                            // As `Value` does: a repeated key's last value stands.
                            fields.insert(name.to_owned(), map.next_value()?);
                        }
                        None => {
                            map.next_value::<Checked>()?;
                        }
                    }
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(Top)
    }
}

/// An object key: which of [`READ`] it is, if any. A private serde_json key is an error (the
/// full parse then decides).
struct Key(Option<&'static str>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                if key.starts_with(PRIVATE_KEY_PREFIX) {
                    return Err(E::custom("a serde_json private key"));
                }
                Ok(Key(READ.iter().find(|name| **name == key).copied()))
            }
        }
        // `Value` reads keys with `deserialize_str` too.
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Any JSON value, read and checked as a `Value` is, and kept nowhere.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CheckedVisitor;
        impl<'de> Visitor<'de> for CheckedVisitor {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_key::<Key>()?.is_some() {
                    map.next_value::<Checked>()?;
                }
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
        }
        deserializer.deserialize_any(CheckedVisitor)
    }
}

/// An id field as [`WebhookPayload::identify`] reads it: a string, or nothing. Any other value
/// (a 6 MB array included) is skipped as it is read, never built.
#[derive(Default)]
struct IdField(Option<String>);

impl<'de> serde::Deserialize<'de> for IdField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct StringOrSkip;
        impl<'de> Visitor<'de> for StringOrSkip {
            type Value = IdField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<IdField, E> {
                Ok(IdField(Some(v.to_owned())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdField, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IdField(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdField, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IdField(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IdField, E> {
                Ok(IdField(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IdField, E> {
                Ok(IdField(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IdField, E> {
                Ok(IdField(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IdField, E> {
                Ok(IdField(None))
            }
            fn visit_unit<E>(self) -> Result<IdField, E> {
                Ok(IdField(None))
            }
        }
        deserializer.deserialize_any(StringOrSkip)
    }
}
