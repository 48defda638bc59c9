//! How a run's progress is shown while it goes, from its shards' progress files: on a
//! terminal a bar per running shard (objects, bytes, rate, ETA) above a bar for the run;
//! otherwise a plain line every 10 s with the same figures. The local runner shows it, and
//! so do `sluice submit`, `sluice resume` and `sluice status --watch` for a run on a cluster.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::spec::size::human_bytes;
use crate::state::RunLayout;
use crate::state::progress::{ShardProgress, read_progress};
use crate::storage::Storage;

/// How often the plain line is written.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// The bars of a run on a terminal: one per running shard, above the run's own.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
}

impl Bars {
    fn new(bytes: u64) -> Bars {
        let multi = MultiProgress::new();
        let total = multi.add(ProgressBar::new(bytes));
        total.set_style(
            ProgressStyle::with_template(
                "{spinner} run     [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
        total.enable_steady_tick(Duration::from_millis(200));
        Bars { multi, total }
    }

    /// The run's bar: lines printed through it appear above the bars.
    pub fn total(&self) -> &ProgressBar {
        &self.total
    }

    /// Takes every bar off the terminal.
    pub fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.multi.clear();
    }
}

/// The progress of one run, as bars or as lines.
pub struct ProgressView {
    bars: Option<Bars>,
    shard_bars: Vec<Option<ProgressBar>>,
    total: u64,
    started: Instant,
    last_line: Instant,
}

impl ProgressView {
    /// A view of `shards` shards and `total` bytes: bars when `terminal`.
    pub fn new(terminal: bool, shards: usize, total: u64) -> ProgressView {
        let now = Instant::now();
        ProgressView {
            bars: terminal.then(|| Bars::new(total)),
            shard_bars: vec![None; shards],
            total,
            started: now,
            last_line: now,
        }
    }

    pub fn bars(&self) -> Option<&Bars> {
        self.bars.as_ref()
    }

    /// Shows the shards' latest progress (index i: shard i; `None` not started).
    pub fn show(&mut self, progress: &[Option<ShardProgress>]) {
        let Some(bars) = &self.bars else {
            if self.last_line.elapsed() >= LINE_EVERY {
                self.last_line = Instant::now();
                tracing::info!(
                    "{}",
                    progress_line(progress, self.total, self.started.elapsed())
                );
            }
            return;
        };
        let done: u64 = progress.iter().flatten().map(|p| p.bytes_done).sum();
        bars.total.set_position(done);
        for (slot, p) in self.shard_bars.iter_mut().zip(progress) {
            show_shard(bars, slot, p.as_ref());
        }
    }
}

/// Reads the run's progress files every second into `view`, until aborted.
pub(super) async fn watch_progress(
    storage: Storage,
    layout: RunLayout,
    shards: u32,
    mut view: ProgressView,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut progress = Vec::with_capacity(shards as usize);
        for index in 0..shards {
            progress.push(read_progress(&storage, &layout, index).await.ok().flatten());
        }
        view.show(&progress);
    }
}

/// Keeps a shard's bar in step with its progress: added when it starts, gone when it ends.
fn show_shard(bars: &Bars, slot: &mut Option<ProgressBar>, progress: Option<&ShardProgress>) {
    let Some(p) = progress else { return };
    if p.finished {
        if let Some(bar) = slot.take() {
            bar.finish_and_clear();
        }
        return;
    }
    let bar = slot.get_or_insert_with(|| {
        let bar = bars
            .multi
            .insert_before(&bars.total, ProgressBar::new(p.bytes_total));
        bar.set_style(
            ProgressStyle::with_template(
                "  shard {prefix:<3} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(p.shard.to_string());
        bar
    });
    bar.set_position(p.bytes_done);
    bar.set_message(format!("{}/{} objects", p.objects_done, p.objects_total));
}

/// The run's progress as one plain line: the run's bytes, rate and ETA, then each shard that
/// started (objects, bytes, rate, ETA, or done).
pub fn progress_line(progress: &[Option<ShardProgress>], total: u64, elapsed: Duration) -> String {
    let done: u64 = progress.iter().flatten().map(|p| p.bytes_done).sum();
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut line = format!(
        "progress {} of {} ({:.0}%), {}/s{}",
        human_bytes(done),
        human_bytes(total),
        done as f64 * 100.0 / total.max(1) as f64,
        human_bytes((done as f64 / seconds) as u64),
        eta(total.saturating_sub(done), done as f64 / seconds)
    );
    for p in progress.iter().flatten() {
        let _ = write!(
            line,
            "; shard {} {}/{} objects {}",
            p.shard,
            p.objects_done,
            p.objects_total,
            human_bytes(p.bytes_done)
        );
        if p.finished {
            line.push_str(" done");
        } else {
            let _ = write!(
                line,
                " {}/s{}",
                human_bytes(p.rate as u64),
                eta(p.bytes_total.saturating_sub(p.bytes_done), p.rate)
            );
        }
    }
    line
}

fn eta(left: u64, rate: f64) -> String {
    if left == 0 || rate <= 0.0 {
        return String::new();
    }
    format!(", ETA {:.0}s", left as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_line_has_the_run_and_each_started_shard() {
        let progress = vec![
            Some(ShardProgress {
                shard: 0,
                objects_total: 4,
                objects_done: 4,
                bytes_total: 4 << 20,
                bytes_done: 4 << 20,
                finished: true,
                ..ShardProgress::default()
            }),
            Some(ShardProgress {
                shard: 1,
                objects_total: 6,
                objects_done: 2,
                bytes_total: 6 << 20,
                bytes_done: 2 << 20,
                rate: (1 << 20) as f64,
                ..ShardProgress::default()
            }),
            None,
        ];
        let line = progress_line(&progress, 16 << 20, Duration::from_secs(3));
        assert_eq!(
            line,
            "progress 6.0 MiB of 16.0 MiB (38%), 2.0 MiB/s, ETA 5s; shard 0 4/4 objects 4.0 MiB done; shard 1 2/6 objects 2.0 MiB 1.0 MiB/s, ETA 4s"
        );
    }
}
