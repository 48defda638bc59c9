//! `s3://bucket/prefix` URIs.

use std::fmt;
use std::str::FromStr;

use crate::exit::ExitCode;
use serde::{Deserialize, Serialize};

/// A bucket and a key or key prefix. A prefix never starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum S3UriError {
    #[error("must start with s3:// (got {0:?})")]
    Scheme(String),
    #[error("names no bucket (got {0:?})")]
    NoBucket(String),
    #[error("bucket name {0:?} is not valid: 3 to 63 characters of a-z, 0-9, '.', '-'")]
    Bucket(String),
}

impl S3UriError {
    /// A malformed `s3://` address is the user's: 2.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::Config
    }
}

impl S3Uri {
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> S3Uri {
        S3Uri {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// This URI as a prefix: the key ends with `/` unless it is empty.
    pub fn as_prefix(&self) -> S3Uri {
        let mut key = self.key.clone();
        if !key.is_empty() && !key.ends_with('/') {
            key.push('/');
        }
        S3Uri::new(self.bucket.clone(), key)
    }

    /// A key below this prefix.
    pub fn join(&self, rest: &str) -> S3Uri {
        let prefix = self.as_prefix();
        S3Uri::new(
            prefix.bucket,
            format!("{}{}", prefix.key, rest.trim_start_matches('/')),
        )
    }
}

impl FromStr for S3Uri {
    type Err = S3UriError;

    fn from_str(s: &str) -> Result<S3Uri, S3UriError> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| S3UriError::Scheme(s.to_string()))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(S3UriError::NoBucket(s.to_string()));
        }
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !valid {
            return Err(S3UriError::Bucket(bucket.to_string()));
        }
        Ok(S3Uri::new(bucket, key.trim_start_matches('/')))
    }
}

impl TryFrom<String> for S3Uri {
    type Error = S3UriError;
    fn try_from(s: String) -> Result<S3Uri, S3UriError> {
        s.parse()
    }
}

impl From<S3Uri> for String {
    fn from(u: S3Uri) -> String {
        u.to_string()
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let u: S3Uri = "s3://raw/trips/2026/".parse().unwrap();
        assert_eq!(u.bucket, "raw");
        assert_eq!(u.key, "trips/2026/");
        assert_eq!(u.join("a.csv").to_string(), "s3://raw/trips/2026/a.csv");
        let bare: S3Uri = "s3://raw".parse().unwrap();
        assert_eq!(bare.key, "");
        assert_eq!(bare.join("x").key, "x");
    }

    #[test]
    fn rejects_bad_uris() {
        assert!(matches!(
            "raw/x".parse::<S3Uri>(),
            Err(S3UriError::Scheme(_))
        ));
        assert!(matches!(
            "s3:///x".parse::<S3Uri>(),
            Err(S3UriError::NoBucket(_))
        ));
        assert!(matches!(
            "s3://Raw_Data/x".parse::<S3Uri>(),
            Err(S3UriError::Bucket(_))
        ));
    }
}
