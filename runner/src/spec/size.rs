//! Byte sizes as users write them: `16MiB`, `16 MiB`, `5GB`, or a plain number of bytes.

use std::borrow::Cow;
use std::fmt;

use bytesize::ByteSize;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::number_or_text::{NumberOrText, number_or_text};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Parses a byte size. Units are case-insensitive: KiB/MiB/GiB/TiB are powers of 1024,
/// KB/MB/GB/TB (and K/M/G/T) powers of 1000; no unit means bytes.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("is empty; write a size like \"16MiB\" or a number of bytes".to_string());
    }
    if !trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "is not a byte size (got {text:?}); write a size like \"16MiB\" or a number of bytes"
        ));
    }
    trimmed.parse::<ByteSize>().map(|b| b.as_u64()).map_err(|_| {
        format!(
            "is not a byte size (got {text:?}); units are B, KiB, MiB, GiB, TiB (1024) or KB, MB, GB, TB (1000)"
        )
    })
}

/// Whether the text names a unit (`"4"` does not): such a size needs no guessing.
pub fn has_unit(text: &str) -> bool {
    text.trim().chars().any(|c| c.is_ascii_alphabetic())
}

/// A size for messages: exact binary units when they fit, else bytes.
pub fn show(bytes: u64) -> String {
    for (unit, name) in [
        (1024 * GIB, "TiB"),
        (GIB, "GiB"),
        (MIB, "MiB"),
        (KIB, "KiB"),
    ] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// A byte size as written: a number of bytes or text like `"16MiB"`; parsed by validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByteSizeConfig {
    Bytes(u64),
    Text(String),
}

impl fmt::Display for ByteSizeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteSizeConfig::Bytes(n) => write!(f, "{n}"),
            ByteSizeConfig::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl ByteSizeConfig {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            ByteSizeConfig::Bytes(n) => Ok(*n),
            ByteSizeConfig::Text(text) => parse_byte_size(text),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSizeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(d, "a byte size like \"16MiB\" or a number of bytes", false)? {
            NumberOrText::Unsigned(n) => Ok(ByteSizeConfig::Bytes(n)),
            NumberOrText::Text(s) => Ok(ByteSizeConfig::Text(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for ByteSizeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ByteSizeConfig::Bytes(n) => s.serialize_u64(*n),
            ByteSizeConfig::Text(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for ByteSizeConfig {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A byte size: a number of bytes, or a number with a unit such as \"16MiB\", \"16 MiB\" or \"5GB\" (KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB of 1000).",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string" }
            ]
        })
    }
}

/// Bytes in binary units with one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200.0 MiB");
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_byte_size("16MiB"), Ok(16 * MIB));
        assert_eq!(parse_byte_size("16 MiB"), Ok(16 * MIB));
        assert_eq!(parse_byte_size(" 16mib "), Ok(16 * MIB));
        assert_eq!(parse_byte_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_byte_size("5GiB"), Ok(5 * GIB));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_byte_size("1048576"), Ok(MIB));
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for bad in ["", "  ", "MiB", "-5MiB", "16 parsecs", "ten"] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn shows_sizes_readably() {
        assert_eq!(show(5 * MIB), "5 MiB");
        assert_eq!(show(10 * GIB), "10 GiB");
        assert_eq!(show(5_000_000_000), "5000000000 bytes");
        assert_eq!(show(0), "0 bytes");
        assert!(has_unit("256MiB"));
        assert!(!has_unit("4"));
    }
}
