//! The backend behind the test S3 server: s3s-fs, optionally behaving as S3-compatible stores
//! that differ from AWS do, so that a program's probe of the store is tested against each:
//! conditional writes ignored (the write replaces the object, as Garage 2.5 does) and user
//! metadata dropped. Conditions answered 501 and refused signing modes are handled in front of
//! s3s (`Faults::serve`), where the request is still raw.
//!
//! ```text
//!  s3s (auth, parsing) ──> Store ──conditional PUT: body read whole, then checked and written
//!                                   under one lock (AWS decides at completion) ──> s3s-fs
//!                                ──ignore conditions: If-None-Match / If-Match cleared──> s3s-fs
//!                                └─drop metadata: x-amz-meta-* cleared on PUT and multipart create
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};

use super::Faults;

/// s3s-fs with the store profile of [`Faults`].
pub(super) struct Store {
    pub(super) fs: s3s_fs::FileSystem,
    pub(super) faults: Arc<Faults>,
    /// Held while a conditional write is checked and written (see `put_object`).
    pub(super) conditional: tokio::sync::Mutex<()>,
}

/// Methods passed to s3s-fs unchanged, written as `async_trait` expands them (its attribute
/// does not see inside a macro's output).
macro_rules! delegate {
    ($($name:ident: $input:ty => $output:ty;)*) => {
        $(
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                req: S3Request<$input>,
            ) -> Pin<Box<dyn Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                self.fs.$name(req)
            }
        )*
    };
}

#[async_trait::async_trait]
impl S3 for Store {
    delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        upload_part: UploadPartInput => UploadPartOutput;
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
        list_parts: ListPartsInput => ListPartsOutput;
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput;
    }

    async fn put_object(&self, mut req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        if self.faults.ignore_conditions.load(Ordering::SeqCst) {
            req.input.if_none_match = None;
            req.input.if_match = None;
        }
        if self.faults.drop_metadata.load(Ordering::SeqCst) {
            req.input.metadata = None;
        }
        if req.input.if_none_match.is_none() && req.input.if_match.is_none() {
            return self.fs.put_object(req).await;
        }
        // AWS evaluates a conditional PUT when the write completes, not when the request
        // starts: of two racing creates, the first to finish wins and the other is refused,
        // however long its body took. s3s-fs checks before reading the body, so the body is
        // read first here, and the check and the write are one step among conditional writes.
        if let Some(body) = req.input.body.take() {
            let bytes = collect(body).await?;
            req.input.body = Some(StreamingBlob::from(s3s::Body::from(bytes)));
        }
        let _one_at_a_time = self.conditional.lock().await;
        self.fs.put_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        mut req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        if self.faults.drop_metadata.load(Ordering::SeqCst) {
            req.input.metadata = None;
        }
        self.fs.create_multipart_upload(req).await
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        if self.faults.ignore_conditions.load(Ordering::SeqCst) {
            req.input.if_none_match = None;
            req.input.if_match = None;
        }
        let _one_at_a_time = self.conditional.lock().await;
        self.fs.complete_multipart_upload(req).await
    }
}

/// A request body, whole.
async fn collect(body: StreamingBlob) -> S3Result<bytes::Bytes> {
    use futures::TryStreamExt;
    let chunks: Vec<bytes::Bytes> =
        body.try_collect().await.map_err(|e| s3s::s3_error!(IncompleteBody, "reading the body: {e}"))?;
    Ok(chunks.concat().into())
}
