//! A consumed message's headers, read straight from librdkafka with their names as bytes. The
//! `rdkafka` crate's `Headers::try_get` unwraps the conversion of a name to UTF-8, so a header
//! name that is not UTF-8 (any producer can send one) would panic the reader on that record at
//! every restart; here nothing a producer sends can.
//!
//! ```text
//!  BorrowedMessage::ptr ──rd_kafka_message_headers──> headers (owned by the message)
//!     ──rd_kafka_header_get_all(i)──> (name bytes, value or null), borrowed for the message's life
//! ```

use std::ffi::{CStr, c_char, c_void};

use rdkafka::message::BorrowedMessage;
use rdkafka_sys as sys;

/// One header: its name's bytes (as librdkafka keeps it, up to a NUL) and its value (`None`
/// for a null value).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// The headers of `m`, in the producer's order (a name may repeat).
pub fn of<'a>(m: &'a BorrowedMessage<'_>) -> Vec<Header<'a>> {
    let mut hdrs: *mut sys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is the message librdkafka handed out, alive as long as `m`;
    // rd_kafka_message_headers only reads it and points `hdrs` at headers the message owns.
    let err = unsafe { sys::rd_kafka_message_headers(m.ptr(), &raw mut hdrs) };
    if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    // SAFETY: `hdrs` is the message's valid header list.
    let count = unsafe { sys::rd_kafka_header_cnt(hdrs) };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) =
            (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: `i` is below the count; the out-pointers are valid locals.
        let err = unsafe { sys::rd_kafka_header_get_all(hdrs, i, &raw mut name, &raw mut value, &raw mut size) };
        if err != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka keeps each name NUL-terminated, and the value `size` bytes long,
        // both owned by the message: the borrows end with `m`'s.
        let key = unsafe { CStr::from_ptr(name) }.to_bytes();
        let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
        out.push((key, value));
    }
    out
}
