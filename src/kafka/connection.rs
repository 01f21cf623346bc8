//! One Kafka client connection: read frames, answer each in order, close on what Kafka
//! closes on. A panic while handling a request ends this connection only ([`crate::panics`]).
//!
//! Produce requests are pipelined: each one's records are queued for the log as it is read,
//! and it is answered once they are durable, while the requests behind it are read and
//! queued too, so a producer with several requests in flight shares one fsync among them
//! instead of paying one per request. Any other request waits until every Produce before it
//! is answered, so it sees their records, and answers stay in request order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::WriteHalf;

use super::codec::{self, Closed, Decoded, MAX_FRAME_BYTES};
use super::handler::{Answer, Handler, Queued, ReadAhead};

/// The most Produce requests one connection has queued for the log and not answered...
const PRODUCES_IN_FLIGHT_MAX: usize = 32;
/// ...and the most bytes their frames may hold (one request, however large, is always
/// taken): past either, the connection reads no more until one is answered.
const PRODUCE_BYTES_IN_FLIGHT_MAX: usize = 32 * 1024 * 1024;

pub async fn run(socket: TcpStream, peer: SocketAddr, handler: Arc<Handler>) {
    let _open = handler
        .db()
        .connections()
        .open(crate::metrics::FrontEnd::Kafka);
    tracing::debug!(%peer, "Kafka connection opened");
    match crate::panics::contain(serve(socket, peer, &handler)).await {
        Ok(Ok(())) => tracing::debug!(%peer, "Kafka connection closed by the client"),
        Ok(Err(Closed(why))) => tracing::info!(%peer, why, "closed a Kafka connection"),
        Err(what) => tracing::warn!(%peer, what, "closed a Kafka connection whose request failed"),
    }
}

async fn serve(mut socket: TcpStream, peer: SocketAddr, handler: &Handler) -> Result<(), Closed> {
    let (mut reader, mut writer) = socket.split();
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let mut produces = InFlight::default();
    let mut ahead = ReadAhead::default();
    loop {
        while produces.has_room()
            && let Some(frame) = codec::next_frame(&mut buffer, MAX_FRAME_BYTES)?
        {
            let size = frame.len();
            let decoded = codec::decode(frame)?;
            if !matches!(&decoded, Decoded::Request(r) if r.key == ApiKey::Produce) {
                produces.answer_all(&mut writer).await?;
            }
            let answer = match decoded {
                Decoded::Request(request) => handler.handle(*request, peer, &mut ahead).await?,
                Decoded::NewerApiVersions { correlation_id } => {
                    Answer::Now(codec::newer_api_versions(correlation_id))
                }
            };
            match answer {
                Answer::Now(response) => respond(&mut writer, Some(response)).await?,
                Answer::Queued(answer) => produces.push(answer, size),
            }
        }
        tokio::select! {
            Some(answer) = produces.next(), if !produces.is_empty() => {
                respond(&mut writer, answer?).await?;
            }
            read = reader.read_buf(&mut buffer), if produces.has_room() => {
                let read = read.map_err(|e| Closed(format!("reading: {e}")))?;
                if read == 0 {
                    // Whatever was queued is answered, in case the client only half closed.
                    produces.answer_all(&mut writer).await?;
                    return if buffer.is_empty() {
                        Ok(())
                    } else {
                        Err(Closed("the client left in the middle of a request".into()))
                    };
                }
            }
        }
    }
}

/// The Produce requests queued for the log and not answered yet, oldest first, with the
/// sizes of their frames.
#[derive(Default)]
struct InFlight<'a> {
    answers: FuturesOrdered<Queued<'a>>,
    sizes: VecDeque<usize>,
    bytes: usize,
}

impl<'a> InFlight<'a> {
    fn push(&mut self, answer: Queued<'a>, size: usize) {
        self.answers.push_back(answer);
        self.sizes.push_back(size);
        self.bytes += size;
    }

    fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// Whether another request may be read.
    fn has_room(&self) -> bool {
        self.is_empty()
            || (self.answers.len() < PRODUCES_IN_FLIGHT_MAX
                && self.bytes < PRODUCE_BYTES_IN_FLIGHT_MAX)
    }

    /// The oldest one's response, once it has one.
    async fn next(&mut self) -> Option<Result<Option<Bytes>, Closed>> {
        let answer = self.answers.next().await?;
        self.bytes -= self.sizes.pop_front().expect("a size per answer");
        Some(answer)
    }

    /// Writes every one's response, in order.
    async fn answer_all(&mut self, writer: &mut WriteHalf<'_>) -> Result<(), Closed> {
        while let Some(answer) = self.next().await {
            respond(writer, answer?).await?;
        }
        Ok(())
    }
}

async fn respond(writer: &mut WriteHalf<'_>, response: Option<Bytes>) -> Result<(), Closed> {
    match response {
        Some(frame) => writer
            .write_all(&frame)
            .await
            .map_err(|e| Closed(format!("writing: {e}"))),
        None => Ok(()),
    }
}
