//! What the local runner shows while a run goes: one bar over the shards' progress files
//! on a terminal, a log line every 10 s otherwise.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::pod::LocalPodRunner;
use crate::state::RunLayout;
use crate::state::progress::read_progress;
use crate::storage::Storage;

impl LocalPodRunner {
    pub(super) fn progress_bar(&self, bytes: u64) -> Option<ProgressBar> {
        if !self.bar {
            return None;
        }
        let bar = ProgressBar::new(bytes);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Some(bar)
    }
}

/// Sums the shards' progress objects into the bar (or a log line every 10 s).
pub(super) async fn watch_progress(
    storage: Storage,
    layout: RunLayout,
    shards: u32,
    total: u64,
    bar: Option<ProgressBar>,
) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        let mut done = 0;
        let mut records = 0;
        for index in 0..shards {
            if let Ok(Some(p)) = read_progress(&storage, &layout, index).await {
                done += p.bytes_done;
                records += p.records.input;
            }
        }
        match &bar {
            Some(bar) => bar.set_position(done),
            None if tick.is_multiple_of(10) => {
                tracing::info!(bytes_done = done, bytes_total = total, records, "progress");
            }
            None => {}
        }
    }
}
