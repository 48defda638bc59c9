//! The names of the transformer protocol (docs/transformers.md), spelled once for the
//! worker's client and the built-in server: its headers, the io environment variable, and
//! how an object key travels in them.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The source object key, percent-encoded UTF-8 (hpush and hpull).
pub const KEY_HEADER: &str = "x-sluice-key";
/// The object size in bytes, when the worker knows it (hpush).
pub const OBJECT_SIZE_HEADER: &str = "x-sluice-object-size";
/// The URL the transformer fetches the object from (hpull; also in the `url` query parameter).
pub const URL_HEADER: &str = "x-sluice-url";
/// The environment variable that holds the object key of an `io` transformer.
pub const KEY_ENV: &str = "SLUICE_KEY";

/// What a key keeps as it is: unreserved characters and `/`.
const KEY_KEEPS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Percent-encodes everything but unreserved characters and `/`.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY_KEEPS).to_string()
}

/// The key a header carried (invalid UTF-8 replaced, never refused).
pub fn decode_key(encoded: &str) -> String {
    percent_decode_str(encoded).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_with_slashes_kept() {
        assert_eq!(encode_key("a b/ü?.csv"), "a%20b/%C3%BC%3F.csv");
        assert_eq!(decode_key("a%20b/%C3%BC%3F.csv"), "a b/ü?.csv");
    }
}
