//! Splitting large source objects into ranges, each a task of its own: byte ranges of text
//! objects (moved to record boundaries by the worker, `worker::cut`), ranges of row groups of
//! Parquet objects.
//!
//! A byte range `[start, end)` owns the records that start between the boundaries its two
//! cuts move to; both ranges beside a cut find the same boundary, so the ranges of an object
//! cover every record exactly once.

use serde::{Deserialize, Serialize};

use crate::format::options::Compression;
use crate::plan::PlannedObject;

/// Which part of an object a task reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRange {
    /// 1-based number of the range within its object (it names the output: `.part-00001`).
    pub part: u32,
    /// Ranges the object is split into.
    pub parts: u32,
    /// What `start` and `end` count.
    pub unit: RangeUnit,
    pub start: u64,
    /// Exclusive.
    pub end: u64,
    /// The size of the whole object (a task's `size` is its range's).
    pub object_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeUnit {
    /// Byte offsets, moved to record boundaries by the worker.
    Bytes,
    /// Row group indexes of a Parquet object.
    RowGroups,
}

impl PlannedRange {
    /// The suffix this range adds to its object's output stem: `.part-00001`.
    pub fn stem_suffix(&self) -> String {
        format!(".part-{:05}", self.part)
    }
}

/// Whether an object can be cut into byte ranges: only uncompressed text.
pub fn splittable_text(key: &str, compression: Option<Compression>) -> bool {
    compression.unwrap_or_else(|| Compression::from_key(key)) == Compression::None
}

/// Cuts a text object larger than `split_size` into byte ranges of `split_size` (the last
/// one takes the remainder); a smaller object stays whole.
pub fn split_bytes(object: PlannedObject, split_size: u64) -> Vec<PlannedObject> {
    let split_size = split_size.max(1);
    if object.size <= split_size {
        return vec![object];
    }
    let parts = object.size.div_ceil(split_size);
    (0..parts)
        .map(|i| {
            let start = i * split_size;
            let end = ((i + 1) * split_size).min(object.size);
            PlannedObject {
                size: end - start,
                range: Some(PlannedRange {
                    part: i as u32 + 1,
                    parts: parts as u32,
                    unit: RangeUnit::Bytes,
                    start,
                    end,
                    object_size: object.size,
                }),
                ..object.clone()
            }
        })
        .collect()
}

/// Groups consecutive row groups (their compressed sizes in `row_groups`) into ranges of
/// about `split_size` bytes each; an object of one range stays whole.
pub fn split_row_groups(
    object: PlannedObject,
    row_groups: &[u64],
    split_size: u64,
) -> Vec<PlannedObject> {
    let mut bounds = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for (i, size) in row_groups.iter().enumerate() {
        if i > start && bytes + size > split_size {
            bounds.push((start, i, bytes));
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < row_groups.len() {
        bounds.push((start, row_groups.len(), bytes));
    }
    if bounds.len() <= 1 {
        return vec![object];
    }
    let parts = bounds.len() as u32;
    bounds
        .into_iter()
        .enumerate()
        .map(|(i, (start, end, bytes))| PlannedObject {
            size: bytes,
            range: Some(PlannedRange {
                part: i as u32 + 1,
                parts,
                unit: RangeUnit::RowGroups,
                start: start as u64,
                end: end as u64,
                object_size: object.size,
            }),
            ..object.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(size: u64) -> PlannedObject {
        PlannedObject {
            key: "in/big.csv".into(),
            size,
            etag: "\"e\"".into(),
            range: None,
        }
    }

    #[test]
    fn byte_ranges_cover_the_object_once() {
        let ranges = split_bytes(obj(1000), 300);
        let spans: Vec<(u64, u64, u32)> = ranges
            .iter()
            .map(|r| {
                let r = r.range.unwrap();
                (r.start, r.end, r.part)
            })
            .collect();
        assert_eq!(
            spans,
            vec![(0, 300, 1), (300, 600, 2), (600, 900, 3), (900, 1000, 4)]
        );
        assert_eq!(ranges.iter().map(|r| r.size).sum::<u64>(), 1000);
        assert!(ranges.iter().all(|r| r.range.unwrap().parts == 4));
        assert_eq!(split_bytes(obj(300), 300), vec![obj(300)]);
    }

    #[test]
    fn row_groups_are_grouped_up_to_the_split_size() {
        let ranges = split_row_groups(obj(0), &[100, 100, 100, 250, 10], 200);
        let spans: Vec<(u64, u64, u64)> = ranges
            .iter()
            .map(|r| (r.range.unwrap().start, r.range.unwrap().end, r.size))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 2, 200), (2, 3, 100), (3, 4, 250), (4, 5, 10)]
        );
        assert_eq!(split_row_groups(obj(0), &[100], 50), vec![obj(0)]);
    }

    #[test]
    fn compressed_objects_are_not_split() {
        assert!(splittable_text("a/b.csv", None));
        assert!(!splittable_text("a/b.csv.gz", None));
        assert!(!splittable_text("a/b.jsonl.zst", None));
        assert!(!splittable_text("a/b.csv", Some(Compression::Gzip)));
    }
}
