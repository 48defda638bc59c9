//! Parquet objects read with ranged GETs, footer first.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result as ParquetResult};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::{S3Uri, Storage, StorageError};

/// Bytes fetched from the end of the object on the first request, so that the footer
/// usually arrives in one GET.
const FOOTER_PREFETCH: usize = 64 << 10;

/// An [`AsyncFileReader`] over one object version (reads are pinned to its ETag when
/// one is given).
#[derive(Debug, Clone)]
pub struct S3ParquetReader {
    storage: Storage,
    uri: S3Uri,
    size: u64,
    etag: Option<String>,
}

impl S3ParquetReader {
    /// `size` is the object's size (from a listing or HEAD); `etag` pins every read.
    pub fn new(storage: Storage, uri: S3Uri, size: u64, etag: Option<String>) -> S3ParquetReader {
        S3ParquetReader {
            storage,
            uri,
            size,
            etag,
        }
    }

    async fn fetch(&self, range: Range<u64>) -> ParquetResult<Bytes> {
        super::read::get_range(&self.storage.client, &self.uri, range, self.etag.as_deref())
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))
    }
}

impl AsyncFileReader for S3ParquetReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, ParquetResult<Bytes>> {
        self.fetch(range).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, ParquetResult<Vec<Bytes>>> {
        async move {
            let fetches = ranges.into_iter().map(|range| self.fetch(range));
            futures::future::try_join_all(fetches).await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, ParquetResult<Arc<ParquetMetaData>>> {
        async move {
            let mut reader = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .with_metadata_options(options.map(|o| o.metadata_options().clone()));
            if let Some(options) = options {
                reader = reader
                    .with_column_index_policy(options.column_index_policy())
                    .with_offset_index_policy(options.offset_index_policy());
            }
            let size = self.size;
            let metadata = reader.load_and_finish(self, size).await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The footer of a Parquet object: schema, row groups, row counts.
pub async fn parquet_metadata(
    storage: &Storage,
    uri: &S3Uri,
    size: u64,
) -> Result<Arc<ParquetMetaData>, StorageError> {
    let mut reader = S3ParquetReader::new(storage.clone(), uri.clone(), size, None);
    reader
        .get_metadata(None)
        .await
        .map_err(|source| StorageError::ParquetMetadata {
            uri: uri.clone(),
            source,
        })
}
