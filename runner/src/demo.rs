//! The demo dataset: deterministic taxi-trip-like CSV objects, some gzip-compressed, with
//! a few malformed rows and some negative fares, for `sluice demo` and `sluice bench`.

use std::io::Write;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The header of every generated object.
pub const HEADER: &str = "vendor_id,pickup_at,dropoff_at,passenger_count,trip_distance,rate_code,store_and_fwd,pickup_location,dropoff_location,payment_type,fare,extra,mta_tax,tip,tolls,improvement_surcharge,total,congestion_surcharge";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct DatasetShape {
    pub objects: usize,
    /// Uncompressed bytes per object (approximately).
    pub object_bytes: usize,
    /// Every n-th object is gzip-compressed (0: none).
    pub gzip_every: usize,
    /// About one malformed row per this many rows (0: none).
    pub malformed_every: u64,
    pub seed: u64,
}

impl Default for DatasetShape {
    fn default() -> Self {
        DatasetShape {
            objects: 20,
            object_bytes: 10 * 1024 * 1024,
            gzip_every: 4,
            malformed_every: 50_000,
            seed: 20261122,
        }
    }
}

/// One generated object.
pub struct GeneratedObject {
    /// Key relative to the dataset prefix, e.g. `trips-03.csv.gz`.
    pub name: String,
    pub body: Vec<u8>,
    pub rows: u64,
    pub malformed: u64,
    pub negative_fares: u64,
}

/// Generates object `index` of the dataset; the same shape and index give the same bytes.
pub fn generate_object(shape: &DatasetShape, index: usize) -> GeneratedObject {
    let mut rng = ChaCha8Rng::seed_from_u64(shape.seed.wrapping_add(index as u64));
    let mut csv = Vec::with_capacity(shape.object_bytes + 4096);
    csv.extend_from_slice(HEADER.as_bytes());
    csv.push(b'\n');
    let start = NaiveDate::from_ymd_opt(2026, 1, 1)
        .expect("valid date")
        .and_hms_opt(0, 0, 0)
        .expect("valid time");
    let (mut rows, mut malformed, mut negative) = (0u64, 0u64, 0u64);
    while csv.len() < shape.object_bytes {
        rows += 1;
        if shape.malformed_every > 0 && rng.random_range(0..shape.malformed_every) == 0 {
            malformed += 1;
            write_malformed(&mut csv, &mut rng);
            continue;
        }
        if write_trip(&mut csv, &mut rng, start) {
            negative += 1;
        }
    }
    let gzip = shape.gzip_every > 0 && index % shape.gzip_every == shape.gzip_every - 1;
    let (name, body) = if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&csv).expect("writing to memory");
        (
            format!("trips-{index:02}.csv.gz"),
            encoder.finish().expect("writing to memory"),
        )
    } else {
        (format!("trips-{index:02}.csv"), csv)
    };
    GeneratedObject {
        name,
        body,
        rows,
        malformed,
        negative_fares: negative,
    }
}

/// Writes one well-formed trip; returns whether its fare is negative (a refund).
fn write_trip(out: &mut Vec<u8>, rng: &mut ChaCha8Rng, start: NaiveDateTime) -> bool {
    let pickup = start + Duration::seconds(rng.random_range(0..31 * 24 * 3600));
    let minutes = rng.random_range(2..90);
    let dropoff = pickup + Duration::seconds(minutes * 60 + rng.random_range(0..60));
    let distance: f64 = rng.random_range(0.3..25.0);
    let negative = rng.random_range(0..200) == 0;
    let mut fare = 3.0 + distance * 2.5 + minutes as f64 * 0.5;
    if negative {
        fare = -fare;
    }
    let extra = [0.0, 0.5, 1.0, 2.5][rng.random_range(0..4)];
    let tip = if rng.random_bool(0.6) {
        fare.abs() * rng.random_range(0.1..0.3)
    } else {
        0.0
    };
    let tolls = if rng.random_bool(0.05) { 6.55 } else { 0.0 };
    let total = fare + extra + 0.5 + tip + tolls + 0.3 + 2.5;
    let _ = writeln!(
        out,
        "{},{},{},{},{:.2},{},{},{},{},{},{:.2},{:.2},0.50,{:.2},{:.2},0.30,{:.2},2.50",
        rng.random_range(1..=2),
        pickup.format("%Y-%m-%d %H:%M:%S"),
        dropoff.format("%Y-%m-%d %H:%M:%S"),
        rng.random_range(1..=6),
        distance,
        rng.random_range(1..=6),
        if rng.random_bool(0.01) { "Y" } else { "N" },
        rng.random_range(1..=265),
        rng.random_range(1..=265),
        rng.random_range(1..=4),
        fare,
        extra,
        tip,
        tolls,
        total,
    );
    negative
}

/// Writes one malformed row: a missing field, or a fare that is not a number.
fn write_malformed(out: &mut Vec<u8>, rng: &mut ChaCha8Rng) {
    if rng.random_bool(0.5) {
        out.extend_from_slice(b"2,2026-01-05 10:00:00,2026-01-05 10:12:00,1,2.10,1,N,48\n");
    } else {
        out.extend_from_slice(
            b"1,2026-01-07 08:30:00,2026-01-07 08:41:00,1,1.90,1,N,100,230,1,n/a,0.50,0.50,0.00,0.00,0.30,12.30,2.50\n",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped() {
        let shape = DatasetShape {
            objects: 4,
            object_bytes: 64 * 1024,
            gzip_every: 4,
            malformed_every: 100,
            seed: 7,
        };
        let a = generate_object(&shape, 0);
        let b = generate_object(&shape, 0);
        assert_eq!(a.body, b.body);
        assert!(a.name.ends_with(".csv"));
        assert!(generate_object(&shape, 3).name.ends_with(".csv.gz"));
        let text = String::from_utf8(a.body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(lines.len() as u64, a.rows + 1);
        let wrong_width = lines[1..]
            .iter()
            .filter(|l| l.split(',').count() != 18)
            .count() as u64;
        let not_numeric = lines[1..].iter().filter(|l| l.contains("n/a")).count() as u64;
        assert_eq!(wrong_width + not_numeric, a.malformed);
        assert!(a.malformed > 0);
    }
}
