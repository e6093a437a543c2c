//! JSON, read the one way the Worker reads it.
//!
//! serde compiles a type's decoder into the wasm once per kind of input it is decoded from, and
//! serde_json compiles its text parser once per kind of text (`&str`, `&[u8]`). So the Worker
//! parses text from bytes only, into a `Value`, and decodes typed values from `Value`s with
//! [`decode`] alone, never with `serde_json::from_value` nor straight from text. (The two
//! exceptions, whose serde messages with line and column reach the client or whose duplicate
//! keys are refused, are a JWT's header and a town's price table.)
//!
//! [`decode`] reads a `Value` as `serde_json::from_value` does, with the same errors, but for one
//! thing: a struct is read from a JSON object only. serde_json also fills a struct from an array
//! of its fields in order, which none of the Worker's inputs is meant to be (request bodies are
//! checked to be objects first, and the reference's schemas want objects inside them too; the
//! objects' calls, replies and rows are objects). That second way of reading every struct was
//! about 13 KB of the gzipped wasm.

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, EnumAccess, Expected, IntoDeserializer, MapAccess,
    SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde_json::{Error, Map, Number, Value};

/// Parses JSON text.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    parse_bytes(text.as_bytes())
}

/// Parses JSON text given as bytes.
pub fn parse_bytes(text: &[u8]) -> serde_json::Result<Value> {
    serde_json::from_slice(text)
}

/// Decodes `T` from JSON text, through a `Value`: a type error gives no line and column.
pub fn from_text<T: DeserializeOwned>(text: &str) -> serde_json::Result<T> {
    from_bytes(text.as_bytes())
}

/// Decodes `T` from JSON text given as bytes, through a `Value`.
pub fn from_bytes<T: DeserializeOwned>(text: &[u8]) -> serde_json::Result<T> {
    decode(parse_bytes(text)?)
}

/// Decodes `T` from a JSON value (see the module's note).
pub fn decode<T: DeserializeOwned>(value: Value) -> serde_json::Result<T> {
    T::deserialize(Reader(value))
}

/// What a value is, for an error message (as serde_json names it).
fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

fn invalid_type(value: &Value, expected: &dyn Expected) -> Error {
    de::Error::invalid_type(unexpected(value), expected)
}

/// A `Value` being decoded.
struct Reader(Value);

/// The number methods: a number is read as it was written (an unsigned, a negative or a float
/// number); anything else is the wrong type.
macro_rules! number {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Number(n) => <Number as de::Deserializer>::deserialize_any(n, visitor),
                other => Err(invalid_type(&other, &visitor)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Reader {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => <Number as de::Deserializer>::deserialize_any(n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(map) => visit_object(map, visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    number! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
        deserialize_f32 deserialize_f64
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            Value::Array(items) => visit_array(items, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Array(items) => visit_array(items, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visit_object(map, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(map) => visit_object(map, visitor),
            other => Err(invalid_type(&other, &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        // An enum is a variant's name, or an object of one key: the variant and its content.
        let (variant, value) = match self.0 {
            Value::Object(map) => {
                let mut entries = map.into_iter();
                match (entries.next(), entries.next()) {
                    (Some((variant, value)), None) => (variant, Some(value)),
                    _ => {
                        return Err(de::Error::invalid_value(
                            Unexpected::Map,
                            &"map with a single key",
                        ))
                    }
                }
            }
            Value::String(variant) => (variant, None),
            other => return Err(invalid_type(&other, &"string or map")),
        };
        visitor.visit_enum(Variant { variant, value })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        drop(self);
        visitor.visit_unit()
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, Error> {
    let len = items.len();
    let mut seq = Items(items.into_iter());
    let out = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    map: Map<String, Value>,
    visitor: V,
) -> Result<V::Value, Error> {
    let len = map.len();
    let mut entries = Entries { entries: map.into_iter(), value: None };
    let out = visitor.visit_map(&mut entries)?;
    if entries.entries.len() == 0 {
        Ok(out)
    } else {
        Err(de::Error::invalid_length(len, &"fewer elements in map"))
    }
}

struct Items(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Items {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|v| seed.deserialize(Reader(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Entries {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(Reader(value)),
            None => Err(de::Error::custom("value is missing")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// An enum's variant name and content, if any.
struct Variant {
    variant: String,
    value: Option<Value>,
}

impl<'de> EnumAccess<'de> for Variant {
    type Error = Error;
    type Variant = Content;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Content), Error> {
        let name = seed.deserialize(self.variant.into_deserializer())?;
        Ok((name, Content(self.value)))
    }
}

/// A variant's content.
struct Content(Option<Value>);

impl<'de> VariantAccess<'de> for Content {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.0 {
            Some(value) => de::Deserialize::deserialize(Reader(value)),
            None => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        match self.0 {
            Some(value) => seed.deserialize(Reader(value)),
            None => Err(de::Error::invalid_type(Unexpected::UnitVariant, &"newtype variant")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Array(items)) if items.is_empty() => visitor.visit_unit(),
            Some(Value::Array(items)) => visit_array(items, visitor),
            Some(other) => Err(invalid_type(&other, &"tuple variant")),
            None => Err(de::Error::invalid_type(Unexpected::UnitVariant, &"tuple variant")),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Some(Value::Object(map)) => visit_object(map, visitor),
            Some(other) => Err(invalid_type(&other, &"struct variant")),
            None => Err(de::Error::invalid_type(Unexpected::UnitVariant, &"struct variant")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Plain,
        Wrapped(u32),
        Pair(i64, String),
        Named { at: f64 },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Inner {
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Newtype(Inner);

    #[derive(Debug, PartialEq, Deserialize)]
    struct Outer {
        id: u32,
        delta: i64,
        ratio: f64,
        on: bool,
        note: Option<String>,
        inner: Inner,
        list: Vec<Inner>,
        kinds: Vec<Kind>,
        map: BTreeMap<String, u8>,
        any: Value,
        unit: (),
        pair: (u8, char),
    }

    /// `decode` and serde_json's `from_value` give the same value, or the same error.
    fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(v: Value) {
        let ours = decode::<T>(v.clone()).map_err(|e| e.to_string());
        let theirs = serde_json::from_value::<T>(v).map_err(|e| e.to_string());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn reads_values_as_serde_json_does() {
        let good = json!({
            "id": 7, "delta": -3, "ratio": 2, "on": true, "note": null, "unit": null,
            "inner": {"name": "a", "extra": [1, {"x": 2}]},
            "list": [{"name": "b", "tags": ["t"]}],
            "kinds": ["plain", {"wrapped": 4}, {"pair": [-1, "p"]}, {"named": {"at": 1.5}}],
            "map": {"k": 255}, "any": {"f": 1.0, "n": [null, true, "s", -2]}, "pair": [1, "c"],
        });
        assert!(decode::<Outer>(good.clone()).is_ok());
        same::<Outer>(good.clone());
        same::<Newtype>(json!({"name": "n"}));
        same::<Option<Inner>>(Value::Null);
        for (field, bad) in [
            ("id", json!(-1)),
            ("id", json!(1.5)),
            ("id", json!("7")),
            ("id", json!(4_294_967_296_u64)),
            ("delta", json!(null)),
            ("ratio", json!(true)),
            ("on", json!(1)),
            ("note", json!(3)),
            ("inner", json!({"tags": []})),
            ("inner", json!("a")),
            ("list", json!({"name": "b"})),
            ("kinds", json!(["other"])),
            ("kinds", json!([{"plain": null, "wrapped": 1}])),
            ("kinds", json!([{}])),
            ("kinds", json!(["wrapped"])),
            ("kinds", json!([{"named": [1.5]}])),
            ("kinds", json!([{"pair": [1]}])),
            ("kinds", json!([{"pair": [1, "a", 2]}])),
            ("kinds", json!([{"plain": 1}])),
            ("kinds", json!([7])),
            ("map", json!({"k": 256})),
            ("map", json!([])),
            ("unit", json!(0)),
            ("pair", json!([1])),
            ("pair", json!([1, "cc"])),
        ] {
            let mut v = good.clone();
            v[field] = bad;
            same::<Outer>(v);
        }
        same::<Outer>(json!({"id": 1}));
        same::<Outer>(json!("text"));
        same::<Outer>(Value::Null);
    }

    #[test]
    fn a_struct_is_read_from_an_object_only() {
        assert!(serde_json::from_value::<Inner>(json!(["a", []])).is_ok());
        let e = decode::<Inner>(json!(["a", []])).expect_err("an array is not an Inner");
        assert_eq!(e.to_string(), "invalid type: sequence, expected struct Inner");
    }

    #[test]
    fn text_is_parsed_from_its_bytes() {
        assert_eq!(parse(r#"{"a": [1, "é"]}"#).expect("parses"), json!({"a": [1, "é"]}));
        assert!(parse("{").is_err());
        assert_eq!(from_text::<Inner>(r#"{"name":"x"}"#).expect("x").name, "x");
        assert_eq!(from_bytes::<Inner>(br#"{"name":"y"}"#).expect("y").name, "y");
        assert!(from_text::<Inner>(r#"{"name":1}"#).is_err());
        assert!(from_bytes::<Inner>(br#"{"name":"y"} x"#).is_err());
    }
}
