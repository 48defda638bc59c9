//! Unit tests of key hashing and key text.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;

use super::*;

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn orders() -> RecordBatch {
    batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(1)])) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from(vec![
                Some("eu"),
                Some("us"),
                Some("eu"),
                None,
            ])),
        ),
    ])
}

#[test]
fn the_hash_of_a_fixed_key_never_changes() {
    // A change of the canonical encoding changes these values: spills written by an
    // earlier sluice would no longer match. Change them only with SPILL_FORMAT_VERSION.
    let hashes = hash_keys(&orders(), &[0, 1]).unwrap();
    let hex: Vec<String> = hashes.iter().map(|h| format!("{h:032x}")).collect();
    assert_eq!(hex, EXPECTED);
}

const EXPECTED: [&str; 4] = [
    "5acb555281cc878707e93f38b46096df",
    "a42ee26a17f32502405144d0aea0a2e3",
    "7eeac0be502c006326f7c8a7a2c87c8b",
    "63e9af695b90bac1cba969a95ec948b4",
];

#[test]
fn the_hash_is_xxh3_128_of_the_documented_bytes() {
    // (1, "eu"): integer tag, i128 little-endian; string tag, u64 length, bytes.
    let mut bytes = vec![0x02];
    bytes.extend_from_slice(&1i128.to_le_bytes());
    bytes.push(0x04);
    bytes.extend_from_slice(&2u64.to_le_bytes());
    bytes.extend_from_slice(b"eu");
    assert_eq!(
        hash_keys(&orders(), &[0, 1]).unwrap()[0],
        xxhash_rust::xxh3::xxh3_128(&bytes)
    );
    // (NULL, "eu"): the null tag alone.
    let mut bytes = vec![0x00, 0x04];
    bytes.extend_from_slice(&2u64.to_le_bytes());
    bytes.extend_from_slice(b"eu");
    assert_eq!(
        hash_keys(&orders(), &[0, 1]).unwrap()[2],
        xxhash_rust::xxh3::xxh3_128(&bytes)
    );
}

#[test]
fn nulls_hash_apart_from_every_value_and_alike_among_themselves() {
    let data = batch(vec![
        (
            "a",
            Arc::new(StringArray::from(vec![None, Some(""), Some("null"), None])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(Int64Array::from(vec![Some(0), Some(0), Some(0), Some(0)])),
        ),
    ]);
    let h = hash_keys(&data, &[0, 1]).unwrap();
    assert_eq!(h[0], h[3]);
    assert_ne!(h[0], h[1]);
    assert_ne!(h[0], h[2]);
    assert_ne!(h[1], h[2]);
    assert_eq!(
        key_texts(&data, &[0, 1]).unwrap(),
        ["[null,0]", "[\"\",0]", "[\"null\",0]", "[null,0]"]
    );
}

#[test]
fn column_boundaries_are_part_of_the_key() {
    let data = batch(vec![
        (
            "a",
            Arc::new(StringArray::from(vec!["ab", "a"])) as ArrayRef,
        ),
        ("b", Arc::new(StringArray::from(vec!["c", "bc"]))),
    ]);
    let h = hash_keys(&data, &[0, 1]).unwrap();
    assert_ne!(h[0], h[1]);
}

#[test]
fn integers_of_any_width_and_signed_zeros_hash_alike() {
    let narrow = batch(vec![(
        "id",
        Arc::new(Int32Array::from(vec![7, -3])) as ArrayRef,
    )]);
    let wide = batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![7, -3])) as ArrayRef,
    )]);
    assert_eq!(
        hash_keys(&narrow, &[0]).unwrap(),
        hash_keys(&wide, &[0]).unwrap()
    );
    let zeros = batch(vec![(
        "x",
        Arc::new(Float64Array::from(vec![0.0, -0.0, f64::NAN, -f64::NAN])) as ArrayRef,
    )]);
    let h = hash_keys(&zeros, &[0]).unwrap();
    assert_eq!(h[0], h[1]);
    assert_eq!(h[2], h[3]);
    let text = batch(vec![(
        "id",
        Arc::new(StringArray::from(vec!["7"])) as ArrayRef,
    )]);
    assert_ne!(
        hash_keys(&text, &[0]).unwrap()[0],
        hash_keys(&wide, &[0]).unwrap()[0]
    );
}

#[test]
fn key_text_is_a_json_array_cut_at_the_limit() {
    let texts = key_texts(&orders(), &[1, 0]).unwrap();
    assert_eq!(
        texts,
        ["[\"eu\",1]", "[\"us\",2]", "[\"eu\",null]", "[null,1]"]
    );
    let long = "é".repeat(300);
    let data = batch(vec![(
        "s",
        Arc::new(StringArray::from(vec![long.as_str()])) as ArrayRef,
    )]);
    let text = &key_texts(&data, &[0]).unwrap()[0];
    assert!(text.len() <= KEY_TEXT_LIMIT, "{}", text.len());
    assert!(text.starts_with("[\"éé") && text.ends_with('…'), "{text}");
}

#[test]
fn unknown_key_columns_are_named_with_the_columns_there_are() {
    let schema = orders().schema();
    let error = KeyColumns::resolve(&schema, &["id", "customer"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "key column \"customer\" is not in the data (columns: id, region)"
    );
    let columns = KeyColumns::resolve(&schema, &["region", "id"]).unwrap();
    assert_eq!(columns.indices(), [1, 0]);
    assert!(matches!(
        hash_keys(&orders(), &[5]),
        Err(KeysError::ColumnIndex {
            index: 5,
            columns: 2
        })
    ));
}
