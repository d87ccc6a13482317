//! Items and attribute values: JSON from a stored attribute, DynamoDB's size of an item,
//! numbers DynamoDB can hold, gzip, and reading one attribute of an item.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Number, Value};

pub(in crate::mirror) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A stored attribute as JSON (sets become arrays, binaries are dropped).
pub fn json_from_attribute(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => number(text),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(json_from_attribute).collect()),
        AttributeValue::M(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), json_from_attribute(v))).collect())
        }
        AttributeValue::Ss(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(items) => Value::Array(items.iter().map(|t| number(t)).collect()),
        _ => Value::Null,
    }
}

fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    text.parse::<f64>().ok().and_then(Number::from_f64).map_or(Value::Null, Value::Number)
}

/// DynamoDB's size of an item: attribute names plus values (strings and names by UTF-8 length,
/// numbers by about one byte per two digits plus one, 1 byte for booleans and nulls, 3 bytes
/// per map or list plus 1 per element), per
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(t) => t.len(),
        AttributeValue::N(t) => t.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|i| 1 + value_size(i)).sum::<usize>(),
        AttributeValue::M(fields) => 3 + fields.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|t| t.len().div_ceil(2) + 1).sum(),
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        _ => 0,
    }
}

/// A number as DynamoDB can store it: up to 38 digits, magnitudes from 1E-130 to below 1E+126
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-data-types-numbers>).
/// `None` outside that range, where DynamoDB would refuse the whole request.
pub(super) fn number_attribute(v: f64) -> Option<AttributeValue> {
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-130..1e126).contains(&magnitude) {
        return None;
    }
    Number::from_f64(v).map(|num| AttributeValue::N(num.to_string()))
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).and_then(|()| encoder.finish()).expect("compressing into memory does not fail")
}

pub(in crate::mirror) fn gunzip(bytes: &[u8]) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).ok()?;
    Some(text)
}

pub(in crate::mirror) fn number_of(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

pub(super) fn text_of<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// `{currentUsage, at}` of a `usage` attribute.
pub(super) fn usage_value(v: &AttributeValue) -> Option<(AttributeValue, i64)> {
    let m = v.as_m().ok()?;
    let at = m.get("at")?.as_n().ok()?.parse().ok()?;
    Some((m.get("currentUsage")?.clone(), at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// JSON as a DynamoDB attribute value (numbers as `N`, objects as `M`, arrays as `L`), as
    /// schema 1 stored entitlements.
    fn attribute_from_json(v: &Value) -> AttributeValue {
        match v {
            Value::Null => AttributeValue::Null(true),
            Value::Bool(b) => AttributeValue::Bool(*b),
            Value::Number(num) => AttributeValue::N(num.to_string()),
            Value::String(text) => AttributeValue::S(text.clone()),
            Value::Array(items) => AttributeValue::L(items.iter().map(attribute_from_json).collect()),
            Value::Object(fields) => {
                AttributeValue::M(fields.iter().map(|(k, v)| (k.clone(), attribute_from_json(v))).collect())
            }
        }
    }

    #[test]
    fn json_round_trips_through_attribute_values() {
        let v = json!({"a": [1, 2.5, "x", null, true, {"b": -3}], "c": "", "big": 12345678901i64});
        assert_eq!(json_from_attribute(&attribute_from_json(&v)), v);
    }
}
