//! `spec.shards` and `spec.split_size`: how the source objects are cut into tasks and the
//! tasks into shards, as written and as checked.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::job::Shards;
use crate::spec::number_or_text::{NumberOrText, number_or_text};
use crate::spec::size::{has_unit, parse_byte_size};
use crate::spec::validate::{Check, path};

pub fn default_shards() -> ShardsConfig {
    ShardsConfig::Size("256MiB".to_string())
}

pub fn default_split_size() -> SplitSizeConfig {
    SplitSizeConfig::Size("256MiB".to_string())
}

/// `spec.shards` as written: a count or a byte size per shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardsConfig {
    Count(u64),
    Size(String),
}

/// `spec.split_size` as written: a byte size, or `0` / `off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitSizeConfig {
    Count(u64),
    Size(String),
}

impl<'de> Deserialize<'de> for SplitSizeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(d, "a size like \"256MiB\", or 0 or off", false)? {
            NumberOrText::Unsigned(n) => Ok(SplitSizeConfig::Count(n)),
            NumberOrText::Text(s) => Ok(SplitSizeConfig::Size(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for SplitSizeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SplitSizeConfig::Count(n) => s.serialize_u64(*n),
            SplitSizeConfig::Size(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for SplitSizeConfig {
    fn schema_name() -> Cow<'static, str> {
        "SplitSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size with a unit such as \"256MiB\" above which an object is split into ranges, or 0 or \"off\" to never split.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 0 },
                { "type": "string" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ShardsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match number_or_text(
            d,
            "a shard count like 4 or a size per shard like \"256MiB\"",
            false,
        )? {
            NumberOrText::Unsigned(n) => Ok(ShardsConfig::Count(n)),
            NumberOrText::Text(s) => Ok(ShardsConfig::Size(s)),
            NumberOrText::Float(_) => unreachable!("floats are refused by the visitor"),
        }
    }
}

impl Serialize for ShardsConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ShardsConfig::Count(n) => s.serialize_u64(*n),
            ShardsConfig::Size(t) => s.serialize_str(t),
        }
    }
}

impl JsonSchema for ShardsConfig {
    fn schema_name() -> Cow<'static, str> {
        "Shards".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A number of shards (at least 1), or a target size per shard with a unit such as \"256MiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string" }
            ]
        })
    }
}

impl Check<'_> {
    pub(super) fn split_size(&mut self, s: &SplitSizeConfig) -> Option<Option<u64>> {
        let at = path("spec.split_size");
        match s {
            SplitSizeConfig::Count(0) => Some(None),
            SplitSizeConfig::Size(text) if text.trim().eq_ignore_ascii_case("off") => Some(None),
            SplitSizeConfig::Count(n) => {
                self.error(
                    at,
                    format!("a split size needs a unit, like \"256MiB\", or is 0 or off (got {n})"),
                );
                None
            }
            SplitSizeConfig::Size(text) if !has_unit(text) => {
                self.error(
                    at,
                    format!(
                        "a split size needs a unit, like \"256MiB\", or is 0 or off (got {text:?})"
                    ),
                );
                None
            }
            SplitSizeConfig::Size(text) => match parse_byte_size(text) {
                Ok(0) => Some(None),
                Ok(n) => Some(Some(n)),
                Err(message) => {
                    self.error(at, message);
                    None
                }
            },
        }
    }

    pub(super) fn shards(&mut self, s: &ShardsConfig) -> Option<Shards> {
        let at = path("spec.shards");
        match s {
            ShardsConfig::Count(0) => {
                self.error(at, "must be at least 1 (got 0)");
                None
            }
            ShardsConfig::Count(n) => match u32::try_from(*n) {
                Ok(n) => Some(Shards::Count(n)),
                Err(_) => {
                    self.error(at, format!("must be at most {} (got {n})", u32::MAX));
                    None
                }
            },
            ShardsConfig::Size(text) if !has_unit(text) => {
                self.error(
                    at,
                    format!("a size per shard needs a unit, like \"256MiB\"; for a number of shards write the number without quotes (got {text:?})"),
                );
                None
            }
            ShardsConfig::Size(text) => match parse_byte_size(text) {
                Ok(0) => {
                    self.error(
                        at,
                        format!("must be more than 0 bytes per shard (got {text:?})"),
                    );
                    None
                }
                Ok(n) => Some(Shards::TargetBytes(n)),
                Err(message) => {
                    self.error(at, message);
                    None
                }
            },
        }
    }
}
