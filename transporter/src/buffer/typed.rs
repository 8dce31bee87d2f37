//! Typed columns from JSON values (`parquet.value-schema`): each record's value parsed as a JSON
//! object and its fields written as columns of the types the configuration gives, in a struct
//! column `value_fields`. A value that does not fit (not JSON, not an object, a field of another
//! type) is not forced: its record goes to the dead-letter object whole. Pure logic.
//!
//! ```text
//!  value ──serde_json──> object ──each schema field: absent or null ──> null
//!                                                   the type's value ──> that column
//!                                                   anything else ────> Misfit (dead letter)
//! ```

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use serde::{Deserialize, Serialize};

/// The type of a typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueType {
    /// A JSON string.
    String,
    /// A JSON integer that fits 64 bits.
    Int64,
    /// A JSON number.
    Float64,
    /// `true` or `false`.
    Boolean,
    /// ms since the epoch (a number) or an RFC 3339 string, as a UTC timestamp.
    Timestamp,
    /// Any JSON, kept as its text.
    Json,
}

impl ValueType {
    fn arrow(self) -> DataType {
        match self {
            ValueType::String | ValueType::Json => DataType::Utf8,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float64 => DataType::Float64,
            ValueType::Boolean => DataType::Boolean,
            ValueType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        }
    }
}

/// One field's parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Typed {
    /// Absent or null.
    Null,
    /// Text (strings and JSON).
    Text(String),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A time in ms.
    Time(i64),
}

/// The schema of the typed columns, in the configuration's order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValueSchema {
    /// Field name and type.
    pub fields: Vec<(String, ValueType)>,
}

impl ValueSchema {
    /// Whether values are typed at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The struct column's fields.
    pub fn arrow_fields(&self) -> Fields {
        Fields::from(self.fields.iter().map(|(n, t)| Field::new(n, t.arrow(), true)).collect::<Vec<_>>())
    }

    /// A builder of the struct column.
    pub fn builder(&self) -> StructBuilder {
        let builders = self
            .fields
            .iter()
            .map(|(_, t)| -> Box<dyn ArrayBuilder> {
                match t {
                    ValueType::String | ValueType::Json => Box::new(StringBuilder::new()),
                    ValueType::Int64 => Box::new(Int64Builder::new()),
                    ValueType::Float64 => Box::new(Float64Builder::new()),
                    ValueType::Boolean => Box::new(BooleanBuilder::new()),
                    ValueType::Timestamp => Box::new(TimestampMillisecondBuilder::new().with_timezone("UTC")),
                }
            })
            .collect();
        StructBuilder::new(self.arrow_fields(), builders)
    }

    /// A value's fields, or why it does not fit.
    pub fn parse(&self, value: Option<&[u8]>) -> Result<Vec<Typed>, String> {
        let value = value.ok_or("a null value (tombstone)")?;
        let doc: serde_json::Value = serde_json::from_slice(value).map_err(|e| format!("not JSON: {e}"))?;
        let obj = doc.as_object().ok_or("not a JSON object")?;
        self.fields
            .iter()
            .map(|(name, t)| match obj.get(name) {
                None | Some(serde_json::Value::Null) => Ok(Typed::Null),
                Some(v) => typed(*t, v).ok_or_else(|| format!("field {name:?} is not {t:?}: {v}")),
            })
            .collect()
    }
}

fn typed(t: ValueType, v: &serde_json::Value) -> Option<Typed> {
    use serde_json::Value as J;
    match (t, v) {
        (ValueType::String, J::String(s)) => Some(Typed::Text(s.clone())),
        (ValueType::Json, v) => Some(Typed::Text(v.to_string())),
        (ValueType::Int64, J::Number(n)) => n.as_i64().map(Typed::Int),
        (ValueType::Float64, J::Number(n)) => n.as_f64().map(Typed::Float),
        (ValueType::Boolean, J::Bool(b)) => Some(Typed::Bool(*b)),
        (ValueType::Timestamp, J::Number(n)) => n.as_i64().map(Typed::Time),
        (ValueType::Timestamp, J::String(s)) => {
            chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| Typed::Time(t.timestamp_millis()))
        }
        _ => None,
    }
}

/// Appends one row of parsed fields to the struct column (`None`: a null row).
pub fn append(builder: &mut StructBuilder, schema: &ValueSchema, row: Option<&[Typed]>) -> Result<(), String> {
    for (i, (_, t)) in schema.fields.iter().enumerate() {
        let v = row.and_then(|r| r.get(i)).unwrap_or(&Typed::Null);
        let missing = || format!("no builder for column {i}");
        match t {
            ValueType::String | ValueType::Json => {
                let b = builder.field_builder::<StringBuilder>(i).ok_or_else(missing)?;
                b.append_option(match v {
                    Typed::Text(s) => Some(s.as_str()),
                    _ => None,
                });
            }
            ValueType::Int64 => builder.field_builder::<Int64Builder>(i).ok_or_else(missing)?.append_option(match v {
                Typed::Int(n) => Some(*n),
                _ => None,
            }),
            ValueType::Float64 => {
                builder.field_builder::<Float64Builder>(i).ok_or_else(missing)?.append_option(match v {
                    Typed::Float(n) => Some(*n),
                    _ => None,
                });
            }
            ValueType::Boolean => {
                builder.field_builder::<BooleanBuilder>(i).ok_or_else(missing)?.append_option(match v {
                    Typed::Bool(b) => Some(*b),
                    _ => None,
                });
            }
            ValueType::Timestamp => {
                builder.field_builder::<TimestampMillisecondBuilder>(i).ok_or_else(missing)?.append_option(match v {
                    Typed::Time(t) => Some(*t),
                    _ => None,
                });
            }
        }
    }
    builder.append(row.is_some());
    Ok(())
}

/// A shared schema, as buffers hold it.
pub type SharedSchema = Arc<ValueSchema>;

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> ValueSchema {
        ValueSchema {
            fields: vec![
                ("level".into(), ValueType::String),
                ("status".into(), ValueType::Int64),
                ("ms".into(), ValueType::Float64),
                ("ok".into(), ValueType::Boolean),
                ("at".into(), ValueType::Timestamp),
                ("ctx".into(), ValueType::Json),
            ],
        }
    }

    #[test]
    fn values_that_fit_and_values_that_do_not() {
        let s = schema();
        let row = s
            .parse(Some(br#"{"level":"info","status":200,"ms":1.5,"ok":true,"at":"2026-11-22T08:00:00Z","ctx":{"a":[1]},"extra":1}"#))
            .expect("fits");
        assert_eq!(
            row,
            vec![
                Typed::Text("info".into()),
                Typed::Int(200),
                Typed::Float(1.5),
                Typed::Bool(true),
                Typed::Time(1_795_334_400_000),
                Typed::Text(r#"{"a":[1]}"#.into()),
            ]
        );
        let nulls = s.parse(Some(br#"{"status":null}"#)).expect("absent and null fields are null");
        assert!(nulls.iter().all(|t| *t == Typed::Null));
        for bad in
            [&b"not json"[..], b"[1]", br#"{"status":"200"}"#, br#"{"status":1.5}"#, br#"{"at":"noon"}"#, b"\xff"]
        {
            assert!(s.parse(Some(bad)).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(s.parse(None).is_err(), "a tombstone has no fields");
    }

    #[test]
    fn rows_build_a_struct_column() {
        let s = schema();
        let mut b = s.builder();
        let row = s.parse(Some(br#"{"level":"warn","ok":false}"#)).expect("fits");
        append(&mut b, &s, Some(&row)).expect("append");
        append(&mut b, &s, None).expect("a null row");
        let col = b.finish();
        assert_eq!(arrow_array::Array::len(&col), 2);
        assert_eq!(col.fields().len(), 6);
        assert!(arrow_array::Array::is_null(&col, 1));
    }
}
