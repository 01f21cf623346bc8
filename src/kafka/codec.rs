//! Kafka's framing and request/response headers, without I/O: bytes in, requests out;
//! responses in, bytes out. The connection (`super::connection`) only moves bytes.
//!
//! A frame is a big-endian `i32` length and that many bytes. A request starts with its API
//! key and version, which decide its header version (flexible versions add tagged fields)
//! and how its body decodes. Messages are `kafka-protocol`'s, decoded from the frame as it
//! came (its decoders refuse lengths the frame cannot hold, see `vendor/kafka-protocol`).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::apis;

/// Frames above this many bytes close the connection (Kafka's `socket.request.max.bytes`).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// The most a connection's buffer grows by ahead of the bytes that have arrived.
const READ_AHEAD_BYTES: usize = 1024 * 1024;

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// Why a connection is closed rather than answered, as Kafka closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed(pub String);

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The next whole frame at the front of `buffer` (its length prefix removed), if one has
/// arrived.
pub fn next_frame(buffer: &mut BytesMut, max_bytes: usize) -> Result<Option<Bytes>, Closed> {
    if buffer.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    let length = usize::try_from(length)
        .map_err(|_| Closed(format!("a frame of negative length {length}")))?;
    if length > max_bytes {
        return Err(Closed(format!(
            "a frame of {length} bytes, more than the {max_bytes} allowed"
        )));
    }
    if buffer.len() < 4 + length {
        // Room for what is still to come, a mebibyte at a time: memory follows the bytes
        // that arrive, not the length a client announces.
        buffer.reserve((4 + length - buffer.len()).min(READ_AHEAD_BYTES));
        return Ok(None);
    }
    buffer.advance(4);
    Ok(Some(buffer.split_to(length).freeze()))
}

/// A request, decoded.
#[derive(Debug)]
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What a frame asks for.
#[derive(Debug)]
pub enum Decoded {
    Request(Box<Request>),
    /// ApiVersions at a version newer than served: the answer is a version 0 response with
    /// UNSUPPORTED_VERSION and the versions served, so that the client can pick one (KIP-511).
    NewerApiVersions {
        correlation_id: i32,
    },
}

/// Decodes one frame. An unknown API, a version not served or a body that does not decode
/// closes the connection, as Kafka does.
pub fn decode(mut frame: Bytes) -> Result<Decoded, Closed> {
    if frame.len() < 8 {
        return Err(Closed(format!("a request of {} bytes", frame.len())));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let Some((key, range)) = apis::served(key) else {
        return Err(Closed(format!("API key {key}, which is not served")));
    };
    if !range.contains(&version) {
        if key == ApiKey::ApiVersions && version > *range.end() {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            return Ok(Decoded::NewerApiVersions { correlation_id });
        }
        return Err(Closed(format!(
            "{key:?} version {version}; versions {}–{} are served",
            range.start(),
            range.end()
        )));
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| Closed(format!("a {key:?} v{version} request header: {e:#}")))?;
    let body = RequestKind::decode(key, &mut frame, version)
        .map_err(|e| Closed(format!("a {key:?} v{version} request: {e:#}")))?;
    Ok(Decoded::Request(Box::new(Request {
        key,
        version,
        header,
        body,
    })))
}

/// A response frame (length prefix included) answering `correlation_id` with `body`, in the
/// header and body versions of the request.
pub fn encode(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &ResponseKind,
) -> anyhow::Result<Bytes> {
    // A Fetch response is mostly its records: sized first, it is copied once, not regrown.
    let body_size = match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version)?,
        _ => 0,
    };
    let mut out = BytesMut::with_capacity(64 + body_size);
    out.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut out, key.response_header_version(version))?;
    body.encode(&mut out, version)?;
    let length = i32::try_from(out.len() - 4)?;
    out[..4].copy_from_slice(&length.to_be_bytes());
    Ok(out.freeze())
}

/// The answer to an ApiVersions request at a version newer than served.
pub fn newer_api_versions(correlation_id: i32) -> Bytes {
    let body = ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(apis::advertised());
    encode(
        correlation_id,
        ApiKey::ApiVersions,
        0,
        &ResponseKind::ApiVersions(body),
    )
    .expect("an ApiVersions response encodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};

    fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &RequestKind) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        let length = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&length.to_be_bytes());
        out
    }

    #[test]
    fn frames_are_split_off_as_they_arrive() {
        let one = frame(
            ApiKey::ApiVersions,
            3,
            7,
            &RequestKind::ApiVersions(ApiVersionsRequest::default()),
        );
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&one[..3]);
        assert_eq!(next_frame(&mut buffer, MAX_FRAME_BYTES), Ok(None));
        buffer.extend_from_slice(&one[3..]);
        buffer.extend_from_slice(&one[..5]);
        let first = next_frame(&mut buffer, MAX_FRAME_BYTES).unwrap().unwrap();
        assert_eq!(first.len(), one.len() - 4);
        assert_eq!(next_frame(&mut buffer, MAX_FRAME_BYTES), Ok(None));
        assert_eq!(buffer.len(), 5);
        let Decoded::Request(request) = decode(first).unwrap() else {
            panic!("an ApiVersions request");
        };
        assert_eq!((request.key, request.version), (ApiKey::ApiVersions, 3));
        assert_eq!(request.header.correlation_id, 7);
    }

    #[test]
    fn an_announced_length_does_not_size_the_buffer() {
        // 100 MiB announced, 10 bytes sent: the buffer grows by what arrives.
        let mut buffer = BytesMut::from(&(MAX_FRAME_BYTES as i32).to_be_bytes()[..]);
        buffer.extend_from_slice(&[0; 10]);
        assert_eq!(next_frame(&mut buffer, MAX_FRAME_BYTES), Ok(None));
        assert!(
            buffer.capacity() <= 2 * READ_AHEAD_BYTES,
            "{}",
            buffer.capacity()
        );
    }

    #[test]
    fn oversized_negative_and_garbled_frames_close_the_connection() {
        let mut buffer = BytesMut::from(&(200 * 1024 * 1024i32).to_be_bytes()[..]);
        assert!(next_frame(&mut buffer, MAX_FRAME_BYTES).is_err());
        let mut buffer = BytesMut::from(&(-5i32).to_be_bytes()[..]);
        assert!(next_frame(&mut buffer, MAX_FRAME_BYTES).is_err());
        // Unknown key; a version not served; a body cut short.
        assert!(decode(Bytes::from_static(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1])).is_err());
        let metadata = RequestKind::Metadata(MetadataRequest::default());
        let v13 = frame(ApiKey::Metadata, 13, 1, &metadata)
            .freeze()
            .slice(4..);
        assert!(decode(v13).is_err());
        let v12 = frame(ApiKey::Metadata, 12, 1, &metadata)
            .freeze()
            .slice(4..);
        assert!(decode(v12.clone()).is_ok());
        assert!(decode(v12.slice(..v12.len() - 1)).is_err());
    }

    #[test]
    fn lengths_a_frame_cannot_hold_are_refused_before_anything_is_allocated() {
        // Metadata v4 whose topic array claims 2^31 - 1 entries in a 21-byte frame: the
        // decoder must refuse it, not reserve gigabytes (which would abort the process).
        let mut out = BytesMut::new();
        out.put_i16(ApiKey::Metadata as i16);
        out.put_i16(4);
        out.put_i32(1);
        out.put_i16(-1); // no client id
        out.put_i32(i32::MAX);
        out.put_u8(1);
        let closed = decode(out.freeze()).unwrap_err();
        assert!(closed.0.contains("exceeds"), "{closed}");
        // The same for a flexible version's compact array, and for a byte string.
        let mut out = BytesMut::new();
        out.put_i16(ApiKey::Metadata as i16);
        out.put_i16(12);
        out.put_i32(1);
        out.put_i16(-1);
        out.put_u8(0); // no tagged fields
        out.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // compact length 2^32 - 1
        assert!(decode(out.freeze()).is_err());
    }

    #[test]
    fn a_newer_api_versions_is_answered_in_version_0_with_error_35() {
        // Its body is not decoded (a newer version's layout is unknown): the header's first
        // fields say enough.
        let mut request = BytesMut::new();
        request.put_i16(ApiKey::ApiVersions as i16);
        request.put_i16(9);
        request.put_i32(42);
        request.put_slice(&[0xff, 0xff, 0, 7, 7, 7]);
        let decoded = decode(request.freeze()).unwrap();
        let Decoded::NewerApiVersions { correlation_id } = decoded else {
            panic!("{decoded:?}");
        };
        let mut response = newer_api_versions(correlation_id).slice(4..);
        assert_eq!(response.get_i32(), 42);
        let body = ApiVersionsResponse::decode(&mut response, 0).unwrap();
        assert_eq!(body.error_code, UNSUPPORTED_VERSION);
        assert!(
            body.api_keys
                .iter()
                .any(|k| k.api_key == ApiKey::ApiVersions as i16)
        );
    }
}
