//! What an object has uploaded but not yet made visible: its output parts and its rejects,
//! each a multipart upload waiting to be completed. Whatever is still held when the object
//! fails is aborted here, awaited, in one place; a dropped one aborts in the background
//! (`PendingUpload` does that on drop).

use crate::worker::output::OutputPart;
use crate::worker::rejects::StagedRejects;

pub struct Staged {
    parts: Vec<OutputPart>,
    rejects: Option<StagedRejects>,
}

impl Staged {
    pub fn new(parts: Vec<OutputPart>, rejects: Option<StagedRejects>) -> Staged {
        Staged { parts, rejects }
    }

    pub fn parts(&self) -> &[OutputPart] {
        &self.parts
    }

    pub fn rejects(&self) -> Option<&StagedRejects> {
        self.rejects.as_ref()
    }

    /// The output parts, to complete; the rejects stay guarded.
    pub fn take_parts(&mut self) -> Vec<OutputPart> {
        std::mem::take(&mut self.parts)
    }

    pub fn take_rejects(&mut self) -> Option<StagedRejects> {
        self.rejects.take()
    }

    /// Aborts every upload still staged.
    pub async fn abort(&mut self) {
        for part in self.take_parts() {
            if let Err(error) = part.pending.abort().await {
                tracing::warn!(%error, uri = %part.uri, "aborting an output upload failed");
            }
        }
        if let Some(rejects) = self.take_rejects()
            && let Err(error) = rejects.pending.abort().await
        {
            tracing::warn!(%error, "aborting a rejects upload failed");
        }
    }
}
