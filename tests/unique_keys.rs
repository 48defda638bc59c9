//! Key uniqueness across objects: spill writers and the merge against the embedded S3 server.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use sluice::storage::{S3Uri, Storage};
use sluice::validate::keys::{
    DuplicateReport, KeyOccurrence, KeySpillWriter, KeysError, MergeOptions, SpillOptions,
    find_duplicates, hash_keys, key_texts,
};

use crate::support;

/// Writes one spill for `source` with the given integer keys (row = position).
async fn spill(
    storage: &Storage,
    bucket: &str,
    source: &str,
    ids: &[Option<i64>],
    opts: SpillOptions,
) -> (S3Uri, sluice::validate::keys::SpillSummary) {
    let batch =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef)])
            .unwrap();
    let mut writer = KeySpillWriter::new(opts);
    writer.push_batch(&batch, &[0], 0).unwrap();
    let uri = S3Uri::new(bucket, format!("_sluice/keys/{source}.keys"));
    let summary = writer.finish(storage, uri.clone(), source).await.unwrap();
    (uri, summary)
}

fn merge_opts(fan_in: usize) -> MergeOptions {
    MergeOptions {
        fan_in,
        examples: 100,
        temp_dir: None,
    }
}

fn at(source: &str, row: u64) -> KeyOccurrence {
    KeyOccurrence {
        source: source.into(),
        row,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_one_object_are_found_by_the_writer_and_the_merge() {
    let (storage, bucket) = support::embedded().fresh().await;
    let ids = [Some(5), Some(9), Some(5), Some(1), Some(5)];
    let (uri, summary) = spill(&storage, &bucket, "in/a.csv", &ids, SpillOptions::default()).await;
    assert_eq!(summary.keys, 5);
    assert_eq!(summary.duplicates, 2);
    assert_eq!(summary.runs, 0);
    assert_eq!(summary.examples.len(), 2);
    for example in &summary.examples {
        assert_eq!(example.key, "[5]");
        assert_eq!(example.first, at("in/a.csv", 0));
    }
    let rows: Vec<u64> = summary.examples.iter().map(|e| e.duplicate.row).collect();
    assert_eq!(rows, [2, 4]);
    let stored = storage.head(&uri).await.unwrap().expect("the spill exists");
    assert_eq!(stored.size, summary.bytes);

    let report = find_duplicates(&storage, vec![uri], &merge_opts(4))
        .await
        .unwrap();
    assert_eq!((report.keys, report.distinct, report.duplicates), (5, 3, 2));
    assert_eq!(report.examples, summary.examples);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_objects_name_both_sources_and_rows() {
    let (storage, bucket) = support::embedded().fresh().await;
    let (a, _) = spill(
        &storage,
        &bucket,
        "in/a.csv",
        &[Some(1), Some(2), Some(3)],
        SpillOptions::default(),
    )
    .await;
    let (b, summary) = spill(
        &storage,
        &bucket,
        "in/b.csv",
        &[Some(4), Some(2)],
        SpillOptions::default(),
    )
    .await;
    assert_eq!(summary.duplicates, 0);
    let report = find_duplicates(&storage, vec![a, b], &merge_opts(64))
        .await
        .unwrap();
    assert_eq!(report.spills, 2);
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.passes, 1);
    let example = &report.examples[0];
    assert_eq!(example.key, "[2]");
    assert_eq!(example.first, at("in/a.csv", 1));
    assert_eq!(example.duplicate, at("in/b.csv", 1));
    // The report is what goes into report.json.
    let json = serde_json::to_string(&report).unwrap();
    let back: DuplicateReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_data_has_no_duplicates() {
    let (storage, bucket) = support::embedded().fresh().await;
    let mut spills = Vec::new();
    for (n, source) in ["in/a.csv", "in/b.csv", "in/empty.csv"].iter().enumerate() {
        let ids: Vec<Option<i64>> = if *source == "in/empty.csv" {
            Vec::new()
        } else {
            (0..1000).map(|i| Some(i * 3 + n as i64)).collect()
        };
        spills.push(
            spill(&storage, &bucket, source, &ids, SpillOptions::default())
                .await
                .0,
        );
    }
    let report = find_duplicates(&storage, spills, &merge_opts(2))
        .await
        .unwrap();
    assert!(report.is_unique());
    assert_eq!((report.keys, report.distinct), (2000, 2000));
    assert!(report.examples.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spills_with_a_small_fan_in_find_exactly_the_seeded_duplicates() {
    let (storage, bucket) = support::embedded().fresh().await;
    // 40 objects of 200 unique keys each; 7 keys are repeated in a later object.
    let seeded = [
        (3usize, 11usize, 5u64),
        (7, 39, 0),
        (12, 13, 199),
        (20, 21, 50),
        (0, 39, 7),
        (30, 31, 1),
        (35, 38, 100),
    ];
    let mut spills = Vec::new();
    for object in 0..40usize {
        let mut ids: Vec<Option<i64>> =
            (0..200).map(|r| Some((object * 1000 + r) as i64)).collect();
        for &(from, to, row) in &seeded {
            if to == object {
                // Row `row` of object `to` repeats row `row` of object `from`.
                ids[row as usize] = Some((from * 1000 + row as usize) as i64);
            }
        }
        let source = format!("in/part-{object:03}.csv");
        spills.push(
            spill(&storage, &bucket, &source, &ids, SpillOptions::default())
                .await
                .0,
        );
    }
    let report = find_duplicates(&storage, spills, &merge_opts(3))
        .await
        .unwrap();
    assert_eq!(report.keys, 8000);
    assert_eq!(report.duplicates, seeded.len() as u64);
    assert!(
        report.passes >= 3,
        "40 spills through fan-in 3: {} passes",
        report.passes
    );
    let mut found: Vec<(KeyOccurrence, KeyOccurrence)> = report
        .examples
        .iter()
        .map(|e| (e.first.clone(), e.duplicate.clone()))
        .collect();
    found.sort_by(|a, b| (&a.1.source, a.1.row).cmp(&(&b.1.source, b.1.row)));
    let mut expected: Vec<(KeyOccurrence, KeyOccurrence)> = seeded
        .iter()
        .map(|&(from, to, row)| {
            (
                at(&format!("in/part-{from:03}.csv"), row),
                at(&format!("in/part-{to:03}.csv"), row),
            )
        })
        .collect();
    expected.sort_by(|a, b| (&a.1.source, a.1.row).cmp(&(&b.1.source, b.1.row)));
    assert_eq!(found, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_buffer_spills_several_runs_and_uploads_the_same_bytes() {
    let (storage, bucket) = support::embedded().fresh().await;
    let ids: Vec<Option<i64>> = (0..5000).map(|i| Some((i * 7919) % 3001)).collect();
    let tiny = SpillOptions {
        buffer_bytes: 4096,
        ..SpillOptions::default()
    };
    let (small_uri, small) = spill(&storage, &bucket, "in/x.csv", &ids, tiny).await;
    let large_opts = SpillOptions::default();
    let batch =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef)])
            .unwrap();
    let mut writer = KeySpillWriter::new(large_opts);
    writer.push_batch(&batch, &[0], 0).unwrap();
    let large_uri = S3Uri::new(&bucket, "_sluice/keys/large.keys");
    let large = writer
        .finish(&storage, large_uri.clone(), "in/x.csv")
        .await
        .unwrap();

    assert!(small.runs > 10, "{} runs", small.runs);
    assert_eq!(large.runs, 0);
    assert_eq!(small.duplicates, 5000 - 3001);
    assert_eq!(
        (small.keys, small.duplicates, &small.examples),
        (large.keys, large.duplicates, &large.examples)
    );
    let small_bytes = storage.get_bytes(&small_uri).await.unwrap().unwrap();
    let large_bytes = storage.get_bytes(&large_uri).await.unwrap().unwrap();
    assert_eq!(small_bytes, large_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_in_key_columns_are_one_value() {
    let (storage, bucket) = support::embedded().fresh().await;
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from(vec![Some(1), None, None, Some(1)])) as ArrayRef,
        ),
        (
            "region",
            Arc::new(StringArray::from(vec![
                None,
                Some("eu"),
                Some("eu"),
                Some("eu"),
            ])),
        ),
    ])
    .unwrap();
    let hashes = hash_keys(&batch, &[0, 1]).unwrap();
    let texts = key_texts(&batch, &[0, 1]).unwrap();
    let mut writer = KeySpillWriter::new(SpillOptions::default());
    for (row, (hash, text)) in hashes.iter().zip(&texts).enumerate() {
        writer.push(*hash, row as u64, text).unwrap();
    }
    let uri = S3Uri::new(&bucket, "_sluice/keys/n.keys");
    writer
        .finish(&storage, uri.clone(), "in/n.csv")
        .await
        .unwrap();
    let report = find_duplicates(&storage, vec![uri], &merge_opts(8))
        .await
        .unwrap();
    assert_eq!(report.duplicates, 1);
    assert_eq!(report.examples[0].key, "[null,\"eu\"]");
    assert_eq!(report.examples[0].first, at("in/n.csv", 1));
    assert_eq!(report.examples[0].duplicate, at("in/n.csv", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_spill_is_an_error_naming_it() {
    let (storage, bucket) = support::embedded().fresh().await;
    let (good, _) = spill(
        &storage,
        &bucket,
        "in/a.csv",
        &[Some(1), Some(2)],
        SpillOptions::default(),
    )
    .await;
    let bytes = storage.get_bytes(&good).await.unwrap().unwrap();
    let cut = S3Uri::new(&bucket, "_sluice/keys/cut.keys");
    storage
        .put_bytes(&cut, bytes.slice(..bytes.len() - 2))
        .await
        .unwrap();
    let error = find_duplicates(&storage, vec![good.clone(), cut.clone()], &merge_opts(8))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, KeysError::BadSpill { uri, .. } if *uri == cut),
        "{error}"
    );
    assert!(error.to_string().contains("cut.keys"), "{error}");

    let other = S3Uri::new(&bucket, "_sluice/keys/other.keys");
    storage
        .put_bytes(&other, Bytes::from_static(b"id\n1\n"))
        .await
        .unwrap();
    let error = find_duplicates(&storage, vec![other], &merge_opts(8))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("not a key spill"), "{error}");

    let missing = S3Uri::new(&bucket, "_sluice/keys/missing.keys");
    let error = find_duplicates(&storage, vec![good, missing], &merge_opts(8))
        .await
        .unwrap_err();
    assert!(matches!(error, KeysError::Storage(_)), "{error}");
}
