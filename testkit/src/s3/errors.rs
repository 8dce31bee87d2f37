//! The S3 error responses the test server answers with when a fault or a store profile says so:
//! the XML body S3 sends, with its code and message.

/// An S3 error response, as S3 sends for throttling (503 SlowDown) or an internal error (500).
pub(super) fn error_response(status: u16) -> s3s::HttpResponse {
    let code = if status == 503 { "SlowDown" } else { "InternalError" };
    error_with(status, code, "injected by testkit")
}

/// An S3 error response with `code` and `message`.
pub(super) fn error_with(status: u16, code: &str, message: &str) -> s3s::HttpResponse {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut resp = hyper::Response::new(s3s::Body::from(body));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    resp
}
