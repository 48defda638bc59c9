//! Fields written as a number or as text (`4` or `"256MiB"`, `10` or `"1%"`): the one serde
//! visitor that reads them all.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Unexpected, Visitor};

/// A number or text, as YAML gives it: the shape shared by byte sizes, shard counts, split
/// sizes and bad record limits.
pub(super) enum NumberOrText {
    Unsigned(u64),
    Float(f64),
    Text(String),
}

struct NumberOrTextVisitor {
    expecting: &'static str,
    floats: bool,
}

impl Visitor<'_> for NumberOrTextVisitor {
    type Value = NumberOrText;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumberOrText, E> {
        Ok(NumberOrText::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumberOrText, E> {
        u64::try_from(v)
            .map(NumberOrText::Unsigned)
            .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumberOrText, E> {
        if self.floats {
            Ok(NumberOrText::Float(v))
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NumberOrText, E> {
        Ok(NumberOrText::Text(v.to_string()))
    }
}

pub(super) fn number_or_text<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    floats: bool,
) -> Result<NumberOrText, D::Error> {
    d.deserialize_any(NumberOrTextVisitor { expecting, floats })
}
