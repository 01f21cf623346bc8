//! How many clients the server serves at once, counted as PostgreSQL counts them:
//! `--max-connections` sessions, the last `--superuser-reserved-connections` of them for
//! superusers only, and beside them as many sockets again that are still starting up (TLS,
//! passwords), each for at most the start-up timeout. Sockets that connect and say nothing
//! therefore never take the sessions of clients who log in, and a superuser can always get
//! in to see what is going on.
//!
//! Refusals are PostgreSQL's: `53300` "sorry, too many clients already", or "remaining
//! connection slots are reserved", sent as an `ErrorResponse` the client can show.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use pgwire::error::ErrorInfo;
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub const TOO_MANY: &str = "sorry, too many clients already";

/// The server's connection slots.
pub struct Slots {
    /// Sockets not yet logged in.
    starting: Arc<Semaphore>,
    /// Logged-in sessions.
    sessions: Arc<Semaphore>,
    /// Sessions only superusers may take.
    reserved: usize,
}

impl Slots {
    pub fn new(max_connections: usize, reserved: usize) -> Arc<Slots> {
        Arc::new(Slots {
            starting: Arc::new(Semaphore::new(max_connections)),
            sessions: Arc::new(Semaphore::new(max_connections)),
            reserved: reserved.min(max_connections.saturating_sub(1)),
        })
    }

    /// A ticket for a new socket; `None` when too many are starting up already.
    pub fn arrive(self: &Arc<Self>) -> Option<Arc<Ticket>> {
        let starting = self.starting.clone().try_acquire_owned().ok()?;
        Some(Arc::new(Ticket {
            slots: self.clone(),
            permits: Mutex::new((Some(starting), None)),
            admitted: watch::channel(false).0,
        }))
    }
}

/// One socket's hold on the slots: a start-up slot until it logs in, then a session.
pub struct Ticket {
    slots: Arc<Slots>,
    /// (start-up slot, session slot).
    permits: Mutex<(Option<OwnedSemaphorePermit>, Option<OwnedSemaphorePermit>)>,
    admitted: watch::Sender<bool>,
}

impl Ticket {
    /// Trades the start-up slot for a session, for a client that has logged in; the
    /// refusal's message when none is free (or only reserved ones are, for a superuser).
    pub fn admit(&self, superuser: bool) -> Result<(), &'static str> {
        let mut permits = self.permits.lock().expect("ticket lock");
        if permits.1.is_some() {
            return Ok(());
        }
        let sessions = &self.slots.sessions;
        if !superuser && sessions.available_permits() <= self.slots.reserved {
            return Err(
                "remaining connection slots are reserved for roles with the SUPERUSER attribute",
            );
        }
        let session = sessions.clone().try_acquire_owned().map_err(|_| TOO_MANY)?;
        *permits = (None, Some(session));
        self.admitted.send_replace(true);
        Ok(())
    }

    /// Resolves once the client has logged in.
    pub async fn admitted(&self) {
        let mut admitted = self.admitted.subscribe();
        let _ = admitted.wait_for(|a| *a).await;
    }
}

/// The bytes of a FATAL `ErrorResponse`, for a socket the server writes to directly (one it
/// refuses before start-up, or closes at shutdown).
pub fn fatal_response(code: &str, message: &str) -> BytesMut {
    let response: ErrorResponse =
        ErrorInfo::new("FATAL".into(), code.into(), message.into()).into();
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf)
        .expect("an ErrorResponse always encodes");
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_keep_reserved_slots_for_superusers() {
        let slots = Slots::new(3, 1);
        let a = slots.arrive().unwrap();
        let b = slots.arrive().unwrap();
        let c = slots.arrive().unwrap();
        assert!(slots.arrive().is_none(), "three starting up at most");
        a.admit(false).unwrap();
        b.admit(false).unwrap();
        assert!(c.admit(false).unwrap_err().contains("reserved"));
        c.admit(true).unwrap();
        // Logged-in sessions no longer hold start-up slots.
        let d = slots.arrive().unwrap();
        assert_eq!(d.admit(true).unwrap_err(), TOO_MANY);
        drop(a);
        d.admit(false).unwrap_err();
        d.admit(true).unwrap();
    }

    #[test]
    fn the_refusal_is_an_error_response() {
        let bytes = fatal_response("53300", TOO_MANY);
        assert_eq!(bytes[0], b'E');
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("53300") && text.contains(TOO_MANY), "{text}");
    }
}
