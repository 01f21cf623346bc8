//! One Kafka client connection: read frames, answer each in order, close on what Kafka
//! closes on. A panic while handling a request ends this connection only ([`crate::panics`]).
//!
//! Produce requests are pipelined: each one's records are queued for the log as it is read,
//! and it is answered once they are durable, while the requests behind it are read and
//! queued too, so a producer with several requests in flight shares one fsync among them
//! instead of paying one per request. Any other request waits until every Produce before it
//! is answered, so it sees their records, and answers stay in request order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::WriteHalf;

use super::codec::{self, Closed, Decoded, MAX_FRAME_BYTES};
use super::handler::{Answer, Handler, Queued};

/// The most Produce requests one connection has queued for the log and not answered; past
/// it, the connection reads no more until one is answered.
const PRODUCES_IN_FLIGHT_MAX: usize = 32;

pub async fn run(socket: TcpStream, peer: SocketAddr, handler: Arc<Handler>) {
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
    let mut produces = FuturesOrdered::new();
    loop {
        while produces.len() < PRODUCES_IN_FLIGHT_MAX
            && let Some(frame) = codec::next_frame(&mut buffer, MAX_FRAME_BYTES)?
        {
            let decoded = codec::decode(frame)?;
            if !matches!(&decoded, Decoded::Request(r) if r.key == ApiKey::Produce) {
                answer_all(&mut produces, &mut writer).await?;
            }
            let answer = match decoded {
                Decoded::Request(request) => handler.handle(*request, peer).await?,
                Decoded::NewerApiVersions { correlation_id } => {
                    Answer::Now(Some(codec::newer_api_versions(correlation_id)))
                }
            };
            match answer {
                Answer::Now(response) => respond(&mut writer, response).await?,
                Answer::Queued(answer) => produces.push_back(answer),
            }
        }
        tokio::select! {
            Some(answer) = produces.next(), if !produces.is_empty() => {
                respond(&mut writer, answer?).await?;
            }
            read = reader.read_buf(&mut buffer), if produces.len() < PRODUCES_IN_FLIGHT_MAX => {
                let read = read.map_err(|e| Closed(format!("reading: {e}")))?;
                if read == 0 {
                    // Whatever was queued is answered, in case the client only half closed.
                    answer_all(&mut produces, &mut writer).await?;
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

/// Writes the answers of every queued Produce, in order.
async fn answer_all(
    produces: &mut FuturesOrdered<Queued<'_>>,
    writer: &mut WriteHalf<'_>,
) -> Result<(), Closed> {
    while let Some(answer) = produces.next().await {
        respond(writer, answer?).await?;
    }
    Ok(())
}

async fn respond(writer: &mut WriteHalf<'_>, response: Option<bytes::Bytes>) -> Result<(), Closed> {
    match response {
        Some(frame) => writer
            .write_all(&frame)
            .await
            .map_err(|e| Closed(format!("writing: {e}"))),
        None => Ok(()),
    }
}
