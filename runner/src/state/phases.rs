//! Where an object's time went, by phase: written into done markers, summed into shard
//! progress and the run report, drawn by report.html.
//!
//! The phases of one object overlap: the source is read, decoded, transformed, encoded and
//! uploaded at the same time, on different threads. Each figure is the time that phase was
//! busy (GET and upload: the time the pipeline waited on S3), so they add up to more than the
//! object's wall time when the pipeline overlaps well.

use serde::{Deserialize, Serialize};

/// Seconds per phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhaseTimes {
    /// Waiting for the source's bytes (for Parquet sources, inside `decode`).
    pub get: f64,
    /// Decompressing and decoding records (CPU).
    pub decode: f64,
    /// The transform steps (SQL, built-in operations, transformer exchanges).
    pub transform: f64,
    /// The data rules watching the output.
    pub validate: f64,
    /// Encoding the sink format (CPU).
    pub encode: f64,
    /// Waiting for output parts to upload, and completing the uploads.
    pub upload: f64,
    /// Reading back what was stored to check its record count.
    pub read_back: f64,
    /// Writing done markers and progress (shards only).
    pub commit: f64,
}

impl PhaseTimes {
    /// The phases in pipeline order, with their names.
    pub fn named(&self) -> [(&'static str, f64); 8] {
        [
            ("get", self.get),
            ("decode", self.decode),
            ("transform", self.transform),
            ("validate", self.validate),
            ("encode", self.encode),
            ("upload", self.upload),
            ("read_back", self.read_back),
            ("commit", self.commit),
        ]
    }

    pub fn total(&self) -> f64 {
        self.named().iter().map(|(_, s)| s).sum()
    }

    pub fn add(&mut self, other: &PhaseTimes) {
        self.get += other.get;
        self.decode += other.decode;
        self.transform += other.transform;
        self.validate += other.validate;
        self.encode += other.encode;
        self.upload += other.upload;
        self.read_back += other.read_back;
        self.commit += other.commit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_names_every_phase() {
        let mut a = PhaseTimes {
            get: 1.0,
            commit: 0.5,
            ..PhaseTimes::default()
        };
        a.add(&PhaseTimes {
            get: 2.0,
            encode: 4.0,
            ..PhaseTimes::default()
        });
        assert_eq!(a.get, 3.0);
        assert_eq!(a.total(), 7.5);
        assert_eq!(a.named().len(), 8);
        // Documents written before phases existed still read.
        let old: PhaseTimes = serde_json::from_str("{}").unwrap();
        assert_eq!(old, PhaseTimes::default());
    }
}
