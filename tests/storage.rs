//! The storage module against real S3 servers on loopback: the embedded one and moto.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sluice::storage::{
    ReadTuning, S3Uri, Storage, StorageError, UploadOptions, crc32c_hex, parquet_metadata,
    sync_upload,
};

use crate::support::job_yaml::JobYaml;
use crate::support::{self, pattern};

const MIB: usize = 1 << 20;

/// Parts of the minimum size S3 (and both test servers) accept.
const PARTS: UploadOptions = UploadOptions {
    part_size: 5 << 20,
    parts_in_flight: 2,
};

async fn read_all(storage: &Storage, uri: &S3Uri) -> Vec<u8> {
    let stream = storage.get(uri, None).await.expect("starting a read");
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("reading");
    chunks.concat()
}

/// Waits until no multipart upload is left under `prefix` (aborts on drop run in the
/// background).
async fn assert_no_uploads_left(storage: &Storage, prefix: &S3Uri, server: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = storage.list_multipart_uploads(prefix).await.unwrap();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{server}: uploads left behind: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_through_every_key_in_order() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let storage = storage.with_list_page_size(7);
        let prefix = S3Uri::new(&bucket, "in/");
        let keys: Vec<String> = (0..25)
            .rev()
            .map(|i| format!("in/part-{i:03}.csv"))
            .collect();
        futures::stream::iter(keys.iter())
            .map(|key| {
                let (storage, uri) = (&storage, S3Uri::new(&bucket, key));
                async move { storage.put_bytes(&uri, Bytes::from(uri.key.clone())).await }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        storage
            .put_bytes(&S3Uri::new(&bucket, "other/x"), Bytes::from_static(b"x"))
            .await
            .unwrap();

        let listed = storage.list(&prefix).await.unwrap();
        let mut expected = keys.clone();
        expected.sort();
        let listed_keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(listed_keys, expected, "{}", server.name);
        for object in &listed {
            assert_eq!(object.size, object.key.len() as u64, "{}", server.name);
            assert!(
                !object.etag.is_empty(),
                "{}: {} has no ETag",
                server.name,
                object.key
            );
        }
        let head = storage
            .head(&prefix.join("part-000.csv"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            head.etag, listed[0].etag,
            "{}: listing and HEAD agree",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_and_ranged_reads_return_the_stored_bytes() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "data/object.bin");
        let data = pattern(300_001, 1);
        storage.put_bytes(&uri, data.clone()).await.unwrap();

        assert_eq!(read_all(&storage, &uri).await, data, "{}", server.name);
        let stream = storage.get(&uri, None).await.unwrap();
        assert_eq!(stream.size(), data.len() as u64);
        assert_eq!(
            storage.get_range(&uri, 1000..70_000).await.unwrap(),
            data.slice(1000..70_000),
            "{}",
            server.name
        );
        assert!(storage.get_range(&uri, 5..5).await.unwrap().is_empty());
        assert_eq!(storage.get_bytes(&uri).await.unwrap(), Some(data.clone()));

        let missing = S3Uri::new(&bucket, "data/missing");
        assert_eq!(
            storage.get_bytes(&missing).await.unwrap(),
            None,
            "{}",
            server.name
        );
        assert_eq!(
            storage.head(&missing).await.unwrap(),
            None,
            "{}",
            server.name
        );
        let error = storage.get(&missing, None).await.unwrap_err();
        assert!(!error.is_transient(), "{}: {error:?}", server.name);

        // An empty object has no first range to ask for: it reads as empty all the same.
        let empty = S3Uri::new(&bucket, "data/empty");
        storage.put_bytes(&empty, Bytes::new()).await.unwrap();
        let stream = storage.get(&empty, None).await.unwrap();
        assert_eq!(stream.size(), 0, "{}", server.name);
        assert!(!stream.etag().is_empty(), "{}", server.name);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert!(chunks.concat().is_empty(), "{}", server.name);

        storage.delete(&uri).await.unwrap();
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
        storage.delete(&uri).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_read_as_ordered_concurrent_ranges() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let storage = storage.with_read_tuning(ReadTuning {
            range_size: 256 << 10,
            in_flight: 4,
        });
        let uri = S3Uri::new(&bucket, "big.bin");
        let data = pattern(3 * MIB + 17, 2);
        storage.put_bytes(&uri, data.clone()).await.unwrap();

        let etag = storage.head(&uri).await.unwrap().unwrap().etag;
        let stream = storage.get(&uri, Some(&etag)).await.unwrap();
        assert_eq!(stream.etag(), etag);
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        assert_eq!(chunks.len(), 13, "{}: one chunk per range", server.name);
        assert!(chunks.concat() == data, "{}: bytes differ", server.name);

        // Through a reader, as decoders consume it.
        let stream = storage.get(&uri, None).await.unwrap();
        let mut reader = tokio_util::io::StreamReader::new(stream);
        let mut read = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut read)
            .await
            .unwrap();
        assert!(
            read == data,
            "{}: bytes differ through StreamReader",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_replaced_mid_read_fails_the_read() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let storage = storage.with_read_tuning(ReadTuning {
            range_size: 64 << 10,
            in_flight: 1,
        });
        let uri = S3Uri::new(&bucket, "changing.bin");
        storage.put_bytes(&uri, pattern(2 * MIB, 3)).await.unwrap();

        let mut stream = storage.get(&uri, None).await.unwrap();
        stream.next().await.unwrap().unwrap();
        storage.put_bytes(&uri, pattern(2 * MIB, 4)).await.unwrap();
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("{}: the read finished over a replaced object", server.name),
            }
        };
        let storage_error = StorageError::from_io(&error).expect("a storage error inside");
        assert!(
            matches!(storage_error, StorageError::ObjectChanged { .. }),
            "{}: {storage_error:?}",
            server.name
        );
        assert!(storage_error.is_transient());

        // A stale ETag is refused up front too.
        let stale = storage
            .get(&uri, Some("\"0123456789abcdef0123456789abcdef\""))
            .await;
        assert!(
            matches!(stale, Err(StorageError::ObjectChanged { .. })),
            "{}: {stale:?}",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_writes_parts_with_checksums() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "out/part-0.bin");
        let data = pattern(2 * PARTS.part_size as usize + 1234, 5);

        let mut upload = storage.upload(uri.clone(), PARTS);
        for chunk in data.chunks(700_000) {
            upload.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_eq!(upload.bytes_written(), data.len() as u64);
        let pending = upload.finish().await.unwrap();
        assert_eq!(
            storage.head(&uri).await.unwrap(),
            None,
            "{}: visible before commit",
            server.name
        );
        assert_eq!(
            storage
                .list_multipart_uploads(&S3Uri::new(&bucket, "out/"))
                .await
                .unwrap()
                .len(),
            1,
            "{}",
            server.name
        );
        let uploaded = pending.complete().await.unwrap();

        assert_eq!(uploaded.size, data.len() as u64, "{}", server.name);
        assert_eq!(uploaded.parts, 3, "{}", server.name);
        assert_eq!(
            uploaded.crc32c,
            crc32c_hex(crc32c::crc32c(&data)),
            "{}",
            server.name
        );
        let head = storage.head(&uri).await.unwrap().unwrap();
        assert_eq!(head.size, data.len() as u64, "{}", server.name);
        assert_eq!(head.etag, uploaded.etag, "{}", server.name);
        assert!(
            read_all(&storage, &uri).await == data,
            "{}: bytes differ",
            server.name
        );
        assert_no_uploads_left(&storage, &S3Uri::new(&bucket, ""), server.name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_are_one_put_at_commit() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "small.json");
        let data = Bytes::from_static(b"{\"rows\": 3}\n");

        let mut upload = storage.upload(uri.clone(), PARTS);
        upload.write(data.slice(..4)).await.unwrap();
        upload.write(data.slice(4..)).await.unwrap();
        let pending = upload.finish().await.unwrap();
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
        let uploaded = pending.complete().await.unwrap();
        assert_eq!(uploaded.parts, 1);
        assert_eq!(uploaded.size, data.len() as u64);
        assert_eq!(uploaded.crc32c, crc32c_hex(crc32c::crc32c(&data)));
        assert_eq!(
            storage.get_bytes(&uri).await.unwrap(),
            Some(data),
            "{}",
            server.name
        );

        // An empty object is an object too.
        let empty = S3Uri::new(&bucket, "empty");
        let uploaded = storage
            .upload(empty.clone(), PARTS)
            .finish()
            .await
            .unwrap()
            .complete()
            .await
            .unwrap();
        assert_eq!((uploaded.size, uploaded.crc32c.as_str()), (0, "00000000"));
        assert_eq!(
            storage.head(&empty).await.unwrap().unwrap().size,
            0,
            "{}",
            server.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_aborts_the_upload() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "out/failing.bin");
        let data = pattern(4 * PARTS.part_size as usize, 6);

        let mut upload = storage.upload(uri.clone(), PARTS);
        upload.fail_part(3);
        let mut failure = None;
        for chunk in data.chunks(MIB) {
            if let Err(e) = upload.write(Bytes::copy_from_slice(chunk)).await {
                failure = Some(e);
                break;
            }
        }
        let failure = match failure {
            Some(e) => e,
            None => upload.finish().await.unwrap_err(),
        };
        assert!(
            matches!(failure, StorageError::InjectedFault { part: 3, .. }),
            "{}: {failure:?}",
            server.name
        );
        // Nothing to wait for: the abort happened before the error was returned.
        let left = storage
            .list_multipart_uploads(&S3Uri::new(&bucket, ""))
            .await
            .unwrap();
        assert!(left.is_empty(), "{}: {left:?}", server.name);
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_unfinished_upload_aborts_it() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "out/dropped.bin");
        let prefix = S3Uri::new(&bucket, "out/");
        let mut upload = storage.upload(uri.clone(), PARTS);
        upload
            .write(pattern(PARTS.part_size as usize + 10, 7))
            .await
            .unwrap();
        let listed = storage.list_multipart_uploads(&prefix).await.unwrap();
        assert_eq!(
            listed.len(),
            1,
            "{}: the upload is listed while open",
            server.name
        );
        assert_eq!(listed[0].0, "out/dropped.bin");
        drop(upload);
        assert_no_uploads_left(&storage, &prefix, server.name).await;
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_pending_upload_leaves_no_object() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        for (name, size) in [
            ("multi.bin", PARTS.part_size as usize + 1),
            ("single.bin", 10),
        ] {
            let uri = S3Uri::new(&bucket, name);
            let mut upload = storage.upload(uri.clone(), PARTS);
            upload.write(pattern(size, 8)).await.unwrap();
            let pending = upload.finish().await.unwrap();
            pending.abort().await.unwrap();
            assert_eq!(
                storage.head(&uri).await.unwrap(),
                None,
                "{}: {name}",
                server.name
            );
        }
        let left = storage
            .list_multipart_uploads(&S3Uri::new(&bucket, ""))
            .await
            .unwrap();
        assert!(left.is_empty(), "{}: {left:?}", server.name);

        // A pending upload that is dropped is aborted too.
        let uri = S3Uri::new(&bucket, "dropped-pending.bin");
        let mut upload = storage.upload(uri.clone(), PARTS);
        upload
            .write(pattern(PARTS.part_size as usize + 1, 9))
            .await
            .unwrap();
        drop(upload.finish().await.unwrap());
        assert_no_uploads_left(&storage, &S3Uri::new(&bucket, ""), server.name).await;
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_writer_uploads_through_the_async_task() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "sync.bin");
        let data = pattern(PARTS.part_size as usize * 2 + 99, 10);

        let (mut writer, task) = sync_upload(&storage, uri.clone(), PARTS);
        let to_write = data.clone();
        tokio::task::spawn_blocking(move || {
            for chunk in to_write.chunks(100_000) {
                writer.write_all(chunk).unwrap();
            }
            assert_eq!(writer.bytes_written(), to_write.len() as u64);
            writer.finish().unwrap();
        })
        .await
        .unwrap();
        let uploaded = task.await.unwrap().unwrap().complete().await.unwrap();
        assert_eq!(uploaded.parts, 3, "{}", server.name);
        assert_eq!(uploaded.crc32c, crc32c_hex(crc32c::crc32c(&data)));
        assert!(
            read_all(&storage, &uri).await == data,
            "{}: bytes differ",
            server.name
        );

        // A writer dropped halfway aborts its upload.
        let uri = S3Uri::new(&bucket, "sync-dropped.bin");
        let (mut writer, task) = sync_upload(&storage, uri.clone(), PARTS);
        let half = pattern(PARTS.part_size as usize + 5, 11);
        tokio::task::spawn_blocking(move || writer.write_all(&half).unwrap())
            .await
            .unwrap();
        let error = task.await.unwrap().unwrap_err();
        assert!(
            matches!(error, StorageError::WriterDropped { .. }),
            "{}: {error:?}",
            server.name
        );
        assert_no_uploads_left(&storage, &S3Uri::new(&bucket, ""), server.name).await;
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_footer_and_rows_are_read_with_ranges() {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};
    use sluice::storage::S3ParquetReader;

    let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
    let mut file = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut file, schema.clone(), None).unwrap();
    for start in [0i64, 1000] {
        let column = Int64Array::from_iter_values(start..start + 1000);
        writer
            .write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap())
            .unwrap();
    }
    writer.close().unwrap();
    let file = Bytes::from(file);

    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let uri = S3Uri::new(&bucket, "rows.parquet");
        storage.put_bytes(&uri, file.clone()).await.unwrap();

        let metadata = parquet_metadata(&storage, &uri, file.len() as u64)
            .await
            .unwrap();
        assert_eq!(metadata.file_metadata().num_rows(), 2000, "{}", server.name);

        let reader = S3ParquetReader::new(storage.clone(), uri.clone(), file.len() as u64, None);
        let batches: Vec<RecordBatch> = ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .unwrap()
            .build()
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 2000, "{}", server.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_dropped_into_the_embedded_directory_are_objects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("raw/trips")).unwrap();
    std::fs::write(dir.path().join("raw/trips/a.csv"), "id\n1\n").unwrap();
    let server = sluice::storage::EmbeddedServer::start(dir.path(), None)
        .await
        .unwrap();
    let storage =
        Storage::with_endpoint(server.url(), server.access_key(), server.secret_key()).await;

    let listed = storage.list(&S3Uri::new("raw", "trips/")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "trips/a.csv");
    // The ETag of a file written by hand is the MD5 of its content, as S3 would have it.
    let first = listed[0].etag.clone();
    let md5 = {
        use s3s::crypto::Checksum as _;
        let mut md5 = s3s::crypto::Md5::new();
        md5.update(b"id\n1\n");
        hex::encode(md5.finalize())
    };
    assert_eq!(first, format!("\"{md5}\""));
    let uri = S3Uri::new("raw", "trips/a.csv");
    assert_eq!(
        storage.get_bytes(&uri).await.unwrap().unwrap(),
        Bytes::from_static(b"id\n1\n")
    );

    // A file changed by hand gets a new ETag, and reads pinned to the old one fail.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("raw/trips/a.csv"), "id\n1\n2\n").unwrap();
    let second = storage.head(&uri).await.unwrap().unwrap().etag;
    assert_ne!(first, second);
    assert!(matches!(
        storage.get(&uri, Some(&first)).await,
        Err(StorageError::ObjectChanged { .. })
    ));
    assert_eq!(read_all(&storage, &uri).await, b"id\n1\n2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_rejects_a_part_with_a_wrong_checksum() {
    // moto stores part checksums without checking them, so this runs on the embedded
    // server only.
    let (storage, bucket) = support::embedded().fresh().await;
    let client = storage.client();
    let created = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    let body = pattern(1000, 12);
    let wrong = sluice::storage::crc32c_base64(crc32c::crc32c(&body) ^ 1);
    let error = client
        .upload_part()
        .bucket(&bucket)
        .key("k")
        .upload_id(upload_id)
        .part_number(1)
        .checksum_crc32_c(wrong)
        .body(body.clone().into())
        .send()
        .await
        .unwrap_err();
    let failure = sluice::storage::S3Failure::from_sdk(error);
    assert_eq!(failure.code.as_deref(), Some("BadDigest"), "{failure:?}");
    let right = sluice::storage::crc32c_base64(crc32c::crc32c(&body));
    client
        .upload_part()
        .bucket(&bucket)
        .key("k")
        .upload_id(upload_id)
        .part_number(1)
        .checksum_crc32_c(right)
        .body(body.into())
        .send()
        .await
        .unwrap();
    storage.abort_upload(&bucket, "k", upload_id).await.unwrap();
}

/// `sluice gc`: an upload left open under the sink is aborted once older than the cut-off;
/// a young one, and one outside the job's prefixes, are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_aborts_stale_uploads_under_the_jobs_prefixes_only() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let open = |key: &'static str| {
            let client = storage.client().clone();
            let bucket = bucket.clone();
            async move {
                client
                    .create_multipart_upload()
                    .bucket(&bucket)
                    .key(key)
                    .send()
                    .await
                    .unwrap();
            }
        };
        open("out/left.parquet").await;
        open("_sluice/runs/j/r/out.tmp").await;
        open("elsewhere/keep.bin").await;
        let dir = tempfile::tempdir().unwrap();
        let job = JobYaml::new("j")
            .source(format!("s3://{bucket}/in/"), "csv")
            .sink(format!("s3://{bucket}/out/"))
            .write(dir.path().join("job.yaml"));
        let gc = |older: &str, dry: bool| {
            let mut args = vec!["gc", job.to_str().unwrap(), "--older-than", older];
            if dry {
                args.push("--dry-run");
            }
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(&args)
                .envs(server.env())
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        // Just started: younger than an hour, nothing is touched. (moto reports a fixed
        // start time in 2010 for every upload, so there every upload is old.)
        if server.name != "moto" {
            let young = gc("1h", false);
            assert!(
                young.contains("aborted 0 stale upload(s); left 2 younger"),
                "{}: {young}",
                server.name
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let dry = gc("1s", true);
        assert!(
            dry.contains("would abort 2 stale upload(s)"),
            "{}: {dry}",
            server.name
        );
        assert_eq!(
            storage
                .list_multipart_uploads(&S3Uri::new(&bucket, ""))
                .await
                .unwrap()
                .len(),
            3
        );
        let done = gc("1s", false);
        assert!(
            done.contains(&format!("aborted s3://{bucket}/out/left.parquet")),
            "{done}"
        );
        assert!(
            done.contains("aborted 2 stale upload(s)"),
            "{}: {done}",
            server.name
        );
        let left = storage
            .list_multipart_uploads(&S3Uri::new(&bucket, ""))
            .await
            .unwrap();
        assert_eq!(left.len(), 1, "{}: {left:?}", server.name);
        assert_eq!(left[0].0, "elsewhere/keep.bin");
    }
}

/// What completing a multipart upload refuses, as S3 does: a part smaller than 5 MiB that is
/// not the last, an ETag that is not the part's, parts out of order; and an aborted upload is
/// gone. Nothing becomes visible from a refused completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_an_upload_checks_its_parts_like_s3() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let client = storage.client();
        let key = "checked/parts.bin";
        let upload = client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let id = upload.upload_id().unwrap().to_string();
        let mut etags = Vec::new();
        for (number, body) in [
            (1, pattern(5 * MIB, 1)),
            (2, pattern(5 * MIB, 2)),
            (3, pattern(100, 3)),
            (4, pattern(MIB, 4)),
        ] {
            let part = client
                .upload_part()
                .bucket(&bucket)
                .key(key)
                .upload_id(&id)
                .part_number(number)
                .body(body.into())
                .send()
                .await
                .unwrap();
            etags.push(part.e_tag().unwrap().to_string());
        }
        let complete = |parts: Vec<(i32, String)>| {
            let parts = parts
                .into_iter()
                .map(|(n, e)| CompletedPart::builder().part_number(n).e_tag(e).build())
                .collect::<Vec<_>>();
            client
                .complete_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .upload_id(&id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
        };
        fn code(e: impl aws_sdk_s3::error::ProvideErrorMetadata) -> String {
            e.code().unwrap_or_default().to_string()
        }
        // Part 3 is 100 bytes and not the last.
        let small = complete(vec![(3, etags[2].clone()), (4, etags[3].clone())]).await;
        assert_eq!(
            code(small.unwrap_err()),
            "EntityTooSmall",
            "{}",
            server.name
        );
        let wrong = complete(vec![(1, etags[1].clone()), (2, etags[1].clone())]).await;
        assert_eq!(code(wrong.unwrap_err()), "InvalidPart", "{}", server.name);
        // S3 refuses parts out of order; moto completes them (in the order listed).
        if server.name == "embedded" {
            let unordered = complete(vec![(2, etags[1].clone()), (1, etags[0].clone())]).await;
            assert_eq!(code(unordered.unwrap_err()), "InvalidPartOrder");
        }
        let uri = S3Uri::new(&bucket, key);
        assert_eq!(storage.head(&uri).await.unwrap(), None, "{}", server.name);
        // Parts 2 and 4 make a valid object (numbers need not be consecutive).
        complete(vec![(2, etags[1].clone()), (4, etags[3].clone())])
            .await
            .unwrap();
        let mut want = pattern(5 * MIB, 2).to_vec();
        want.extend_from_slice(&pattern(MIB, 4));
        assert!(
            read_all(&storage, &uri).await == want,
            "{}: bytes differ",
            server.name
        );

        let aborted = client
            .create_multipart_upload()
            .bucket(&bucket)
            .key("checked/aborted.bin")
            .send()
            .await
            .unwrap();
        let aborted_id = aborted.upload_id().unwrap();
        client
            .abort_multipart_upload()
            .bucket(&bucket)
            .key("checked/aborted.bin")
            .upload_id(aborted_id)
            .send()
            .await
            .unwrap();
        let listed = client
            .list_parts()
            .bucket(&bucket)
            .key("checked/aborted.bin")
            .upload_id(aborted_id)
            .send()
            .await;
        assert_eq!(code(listed.unwrap_err()), "NoSuchUpload", "{}", server.name);
    }
}

/// `If-None-Match: *` (how a Delta commit claims its log entry): of writers racing for one
/// key, exactly one succeeds and its bytes are the object's; on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_puts_racing_for_one_key_let_exactly_one_win() {
    for server in support::servers() {
        let (storage, bucket) = server.fresh().await;
        let attempts = (0..12).map(|i| {
            let (client, bucket) = (storage.client().clone(), bucket.clone());
            async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key("_delta_log/00000000000000000001.json")
                    .if_none_match("*")
                    .body(format!("writer {i}").into_bytes().into())
                    .send()
                    .await
                    .map(|_| i)
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<usize> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(winners.len(), 1, "{}: {winners:?}", server.name);
        for failed in results.iter().filter_map(|r| r.as_ref().err()) {
            let code = failed
                .as_service_error()
                .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e))
                .map(str::to_string)
                .or_else(|| {
                    failed
                        .raw_response()
                        .map(|r| r.status().as_u16().to_string())
                });
            assert!(
                matches!(
                    code.as_deref(),
                    Some("PreconditionFailed" | "412" | "ConditionalRequestConflict" | "409")
                ),
                "{}: {failed:?}",
                server.name
            );
        }
        let uri = S3Uri::new(bucket, "_delta_log/00000000000000000001.json");
        let stored = storage.get_bytes(&uri).await.unwrap().unwrap();
        assert_eq!(stored, format!("writer {}", winners[0]).as_bytes());
    }
}

/// The embedded server keeps an upload's parts in a directory of their own (so completing
/// does not read the served directory, which holds a record per object), parts copied with
/// UploadPartCopy among them, and leaves nothing of an upload once it is completed or
/// aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_server_leaves_nothing_of_completed_or_aborted_uploads() {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    use sluice::storage::EmbeddedServer;
    use sluice::storage::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY};
    let dir = tempfile::tempdir().unwrap();
    let server = EmbeddedServer::start(dir.path(), None).await.unwrap();
    let storage =
        Storage::with_endpoint(server.url(), EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY).await;
    storage.create_bucket("parts").await.unwrap();
    storage
        .put_bytes(&S3Uri::new("parts", "source.bin"), pattern(MIB, 7))
        .await
        .unwrap();
    let client = storage.client();
    let mut uploads = Vec::new();
    for key in ["done.bin", "aborted.bin"] {
        let id = client
            .create_multipart_upload()
            .bucket("parts")
            .key(key)
            .content_type("application/octet-stream")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let first = client
            .upload_part()
            .bucket("parts")
            .key(key)
            .upload_id(&id)
            .part_number(1)
            .body(pattern(5 * MIB, 1).into())
            .send()
            .await
            .unwrap();
        let copied = client
            .upload_part_copy()
            .bucket("parts")
            .key(key)
            .upload_id(&id)
            .part_number(2)
            .copy_source("parts/source.bin")
            .send()
            .await
            .unwrap();
        let etags = [
            first.e_tag().unwrap().to_string(),
            copied
                .copy_part_result()
                .unwrap()
                .e_tag()
                .unwrap()
                .to_string(),
        ];
        uploads.push((key, id, etags));
    }
    // What is left of uploads: their files in the served directory, and their directories.
    let upload_files = || {
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("upload") && n != ".uploads")
            .collect();
        if let Ok(open) = std::fs::read_dir(dir.path().join(".uploads")) {
            left.extend(open.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
        }
        // The attributes of open uploads, among the objects' records.
        let mut records = vec![dir.path().join(".sluice-records")];
        while let Some(dir) = records.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().unwrap().is_dir() {
                    records.push(entry.path());
                } else if name.contains("upload") {
                    left.push(name);
                }
            }
        }
        left
    };
    let open = upload_files();
    assert!(
        open.len() >= 4,
        "parts and attributes are stored while the uploads are open: {open:?}"
    );

    let (key, id, etags) = &uploads[0];
    let parts = (1..=2)
        .zip(etags)
        .map(|(n, e)| CompletedPart::builder().part_number(n).e_tag(e).build())
        .collect::<Vec<_>>();
    client
        .complete_multipart_upload()
        .bucket("parts")
        .key(*key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut want = pattern(5 * MIB, 1).to_vec();
    want.extend_from_slice(&pattern(MIB, 7));
    assert!(read_all(&storage, &S3Uri::new("parts", *key)).await == want);
    let (key, id, _) = &uploads[1];
    client
        .abort_multipart_upload()
        .bucket("parts")
        .key(*key)
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        upload_files(),
        Vec::<String>::new(),
        "uploads left files behind"
    );
    assert_eq!(
        storage.head(&S3Uri::new("parts", *key)).await.unwrap(),
        None,
        "the aborted upload made an object"
    );
}

/// A key of S3's full 1,024 bytes (five path segments of up to 220 bytes) is put, read,
/// listed, copied, uploaded in parts and deleted on both servers; the embedded server keeps
/// its records under names of fixed length. A segment longer than a file name is refused by
/// the embedded server with KeyTooLongError, naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_the_full_length_s3_allows_work_end_to_end() {
    use aws_sdk_s3::types::MetadataDirective;
    let segment = |c: char, n: usize| c.to_string().repeat(n);
    let long_key = |last: char| {
        let mut key = format!("deep/{}", segment('a', 199));
        for c in ['b', 'c', 'd'] {
            key.push('/');
            key.push_str(&segment(c, 200));
        }
        key.push('/');
        key.push_str(&segment(last, 1024 - key.len()));
        assert_eq!(key.len(), 1024);
        key
    };
    for server in support::servers() {
        let name = server.name;
        let (storage, bucket) = server.fresh().await;
        let client = storage.client();
        let first = S3Uri::new(&bucket, long_key('e'));
        let data = pattern(70_000, 3);
        storage.put_bytes(&first, data.clone()).await.unwrap();
        let head = storage.head(&first).await.unwrap().expect("the object");
        assert_eq!(head.size, data.len() as u64, "{name}");
        assert!(
            read_all(&storage, &first).await == data,
            "{name}: bytes differ"
        );

        let copy = S3Uri::new(&bucket, long_key('f'));
        client
            .copy_object()
            .bucket(&bucket)
            .key(&copy.key)
            .copy_source(format!("{bucket}/{}", first.key))
            .metadata_directive(MetadataDirective::Replace)
            .content_type("application/x-test")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: copy: {e:?}"));
        let copied = client
            .head_object()
            .bucket(&bucket)
            .key(&copy.key)
            .send()
            .await
            .unwrap();
        assert_eq!(copied.content_type(), Some("application/x-test"), "{name}");
        assert_eq!(
            copied.e_tag().map(|e| e.trim_matches('"')),
            Some(head.etag.trim_matches('"')),
            "{name}: a copy keeps the ETag"
        );
        assert!(
            read_all(&storage, &copy).await == data,
            "{name}: copied bytes differ"
        );

        let parts = S3Uri::new(&bucket, long_key('g'));
        let big = pattern(PARTS.part_size as usize + 4321, 9);
        let mut upload = storage.upload(parts.clone(), PARTS);
        upload.write(big.clone()).await.unwrap();
        let uploaded = upload.finish().await.unwrap().complete().await.unwrap();
        assert_eq!(uploaded.parts, 2, "{name}");
        assert!(
            read_all(&storage, &parts).await == big,
            "{name}: parts differ"
        );

        let listed = storage
            .list(&S3Uri::new(&bucket, "deep/"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect::<Vec<_>>();
        assert_eq!(
            listed,
            [first.key.clone(), copy.key.clone(), parts.key.clone()],
            "{name}"
        );
        for uri in [&first, &copy, &parts] {
            storage.delete(uri).await.unwrap();
            assert_eq!(storage.head(uri).await.unwrap(), None, "{name}");
        }
        assert_no_uploads_left(&storage, &S3Uri::new(&bucket, ""), name).await;

        if name == "embedded" {
            let too_long = S3Uri::new(&bucket, format!("x/{}", segment('z', 300)));
            let error = storage
                .put_bytes(&too_long, Bytes::from_static(b"x"))
                .await
                .expect_err("a segment longer than a file name");
            let shown = sluice::exit::error_chain(&error);
            assert!(shown.contains("KeyTooLongError"), "{shown}");
            assert!(
                shown.contains("longer than the file system allows"),
                "{shown}"
            );
            assert_eq!(storage.head(&too_long).await.unwrap(), None);
        }
    }
}
