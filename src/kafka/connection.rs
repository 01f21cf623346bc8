//! One Kafka client connection: read frames, answer each in order, close on what Kafka
//! closes on. A panic while handling a request ends this connection only ([`crate::panics`]).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, Closed, Decoded, MAX_FRAME_BYTES};
use super::handler::Handler;

pub async fn run(socket: TcpStream, peer: SocketAddr, handler: Arc<Handler>) {
    tracing::debug!(%peer, "Kafka connection opened");
    match crate::panics::contain(serve(socket, peer, &handler)).await {
        Ok(Ok(())) => tracing::debug!(%peer, "Kafka connection closed by the client"),
        Ok(Err(Closed(why))) => tracing::info!(%peer, why, "closed a Kafka connection"),
        Err(what) => tracing::warn!(%peer, what, "closed a Kafka connection whose request failed"),
    }
}

async fn serve(mut socket: TcpStream, peer: SocketAddr, handler: &Handler) -> Result<(), Closed> {
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = codec::next_frame(&mut buffer, MAX_FRAME_BYTES)? {
            let response = match codec::decode(frame)? {
                Decoded::Request(request) => handler.handle(*request, peer).await?,
                Decoded::NewerApiVersions { correlation_id } => {
                    Some(codec::newer_api_versions(correlation_id))
                }
            };
            if let Some(response) = response {
                socket
                    .write_all(&response)
                    .await
                    .map_err(|e| Closed(format!("writing: {e}")))?;
            }
        }
        let read = socket
            .read_buf(&mut buffer)
            .await
            .map_err(|e| Closed(format!("reading: {e}")))?;
        if read == 0 {
            return if buffer.is_empty() {
                Ok(())
            } else {
                Err(Closed("the client left in the middle of a request".into()))
            };
        }
    }
}
