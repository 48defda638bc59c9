//! The keys of a task's output objects (under their partition path, if any), and the
//! numbered objects an earlier, longer attempt left past the ones this attempt wrote.

use crate::plan::keys::task_output_key;
use crate::plan::split::PlannedRange;
use crate::storage::uri::S3Uri;
use crate::worker::error::ObjectError;
use crate::worker::object::ObjectContext;

/// The key of output object `part` of a task, relative to the sink prefix, without the
/// partition path or the run's directory.
pub(crate) fn sink_key(
    sink: &crate::spec::job::Sink,
    relative: &str,
    range: Option<&PlannedRange>,
    part: usize,
) -> String {
    task_output_key(
        &sink.key,
        relative,
        range,
        part,
        sink.format,
        sink.compression,
    )
}

/// The key of output object `part` of a task, under its partition path if it has one.
pub(crate) fn output_uri(
    sink: &crate::spec::job::Sink,
    partition: Option<&str>,
    relative: &str,
    range: Option<&PlannedRange>,
    part: usize,
) -> S3Uri {
    let key = sink_key(sink, relative, range, part);
    let mut relative = String::new();
    for dir in [partition, sink.run_dir.as_deref()].into_iter().flatten() {
        relative.push_str(dir);
        relative.push('/');
    }
    relative.push_str(&key);
    sink.uri.join(&relative)
}

/// The numbered outputs of a task (in one partition) past the ones it wrote.
pub(crate) struct Leftovers<'a> {
    pub partition: Option<&'a str>,
    pub relative: &'a str,
    pub range: Option<&'a PlannedRange>,
    pub written: usize,
}

/// Deletes the numbered outputs beyond the `written` ones that an earlier, longer attempt
/// (or run) left under the same keys, so that the sink holds exactly this object's outputs.
pub(crate) async fn remove_leftover_spills(
    ctx: &ObjectContext,
    leftovers: Leftovers<'_>,
) -> Result<(), ObjectError> {
    let sink = &ctx.job.sink;
    for part in leftovers.written.max(1).. {
        let uri = output_uri(
            sink,
            leftovers.partition,
            leftovers.relative,
            leftovers.range,
            part,
        );
        if ctx.storage.head(&uri).await?.is_none() {
            return Ok(());
        }
        tracing::info!(%uri, "removing a spill-over object left by an earlier attempt");
        ctx.storage.delete(&uri).await?;
    }
    Ok(())
}
