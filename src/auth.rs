//! Who may connect: everyone (`--auth trust`, the default), or users with a password checked
//! by SCRAM-SHA-256 (`--auth password`), as PostgreSQL's `scram-sha-256`.
//!
//! Users are catalog entries ([`UserDef`]) holding a random salt, the iteration count and the
//! salted password, never the password. The superuser `runnel` gets its password from
//! `RUNNEL_PASSWORD` the first time the server starts in password mode; `CREATE USER` and
//! `DROP USER` manage the others. A user that does not exist gets a made-up salt that is the
//! same on every attempt, so a client cannot tell a wrong name from a wrong password; failed
//! logins are logged, with how many in a row for that name.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ring::rand::{SecureRandom, SystemRandom};

use crate::catalog::{Catalog, UserDef};
use crate::error::{Error, Result};
use crate::ingest::writer::now_ms;

/// The superuser, who exists in password mode and may manage users.
pub const SUPERUSER: &str = "runnel";

/// SCRAM's iteration count for new passwords (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every user name is accepted without a password.
    Trust,
    /// SCRAM-SHA-256 against the users of the catalog.
    Password,
}

/// A new user's catalog entry for `password`.
pub fn user(name: &str, password: &str) -> Result<UserDef> {
    if password.is_empty() {
        return Err(Error::plan("28P01", "a password may not be empty"));
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Internal("no random numbers for a salt".into()))?;
    Ok(UserDef {
        name: name.to_string(),
        salt: hex(&salt),
        iterations: ITERATIONS,
        salted_password: hex(&gen_salted_password(password, &salt, ITERATIONS as usize)),
        created_at_ms: now_ms(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Failed logins in a row, per user name.
#[derive(Debug, Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    fn failed(&self, user: &str, peer: std::net::SocketAddr) {
        let mut counts = self.0.lock().expect("lock");
        let n = counts.entry(user.to_string()).or_default();
        *n += 1;
        tracing::warn!(user, %peer, in_a_row = *n, "password authentication failed");
    }

    fn succeeded(&self, user: &str) {
        self.0.lock().expect("lock").remove(user);
    }
}

/// The catalog's users, as SCRAM asks for them.
struct Users {
    catalog: Arc<Catalog>,
    /// Keys the made-up salts of names that are not users.
    decoy: [u8; 32],
}

impl Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").finish_non_exhaustive()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        let data = self.catalog.snapshot();
        if let Some(user) = data.users.get(name)
            && let (Some(salt), Some(salted)) = (unhex(&user.salt), unhex(&user.salted_password))
        {
            return Ok(Password::new(Some(salt), salted));
        }
        // Not a user: a salt derived from the name (the same each time, as a real one would
        // be) and a salted password no password produces.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.decoy);
        let salt = ring::hmac::sign(&key, name.as_bytes()).as_ref()[..16].to_vec();
        let mut impossible = vec![0u8; 32];
        SystemRandom::new()
            .fill(&mut impossible)
            .map_err(|_| PgWireError::InvalidPassword(name.to_string()))?;
        Ok(Password::new(Some(salt), impossible))
    }
}

/// What a connection does before its first query: refuse it without TLS if TLS is required,
/// then let it in (trust) or check its password (SCRAM).
pub struct Gate<H> {
    trusted: Arc<H>,
    scram: Option<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
    tls_required: bool,
    failures: Arc<Failures>,
}

/// What every connection's [`Gate`] shares.
#[derive(Clone)]
pub struct Auth {
    pub mode: AuthMode,
    pub tls_required: bool,
    users: Arc<Users>,
    failures: Arc<Failures>,
}

impl Auth {
    pub fn new(mode: AuthMode, tls_required: bool, catalog: Arc<Catalog>) -> Result<Auth> {
        let mut decoy = [0u8; 32];
        SystemRandom::new()
            .fill(&mut decoy)
            .map_err(|_| Error::Internal("no random numbers".into()))?;
        Ok(Auth {
            mode,
            tls_required,
            users: Arc::new(Users { catalog, decoy }),
            failures: Arc::default(),
        })
    }

    /// A connection's gate; `trusted` lets it in without a password.
    pub fn gate<H>(&self, trusted: Arc<H>, manager: Arc<ConnectionManager>) -> Gate<H> {
        let scram = (self.mode == AuthMode::Password).then(|| {
            let mut scram = ScramAuth::new(self.users.clone());
            scram.set_iterations(ITERATIONS as usize);
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram)
                .with_connection_manager(manager)
        });
        Gate {
            trusted,
            scram,
            tls_required: self.tls_required,
            failures: self.failures.clone(),
        }
    }
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for Gate<H> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(message, PgWireFrontendMessage::Startup(_))
            && self.tls_required
            && !client.is_secure()
        {
            tracing::warn!(peer = %client.socket_addr(), "refused a client without TLS (--tls-required)");
            return Err(fatal(
                "28000",
                "this server requires TLS: connect with sslmode=require",
            ));
        }
        let Some(scram) = &self.scram else {
            return self.trusted.on_startup(client, message).await;
        };
        let password_step = matches!(message, PgWireFrontendMessage::PasswordMessageFamily(_));
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        match scram.on_startup(client, message).await {
            Ok(()) => {
                if password_step
                    && matches!(
                        client.state(),
                        pgwire::api::PgWireConnectionState::ReadyForQuery
                    )
                {
                    self.failures.succeeded(&user);
                }
                Ok(())
            }
            Err(PgWireError::InvalidPassword(_) | PgWireError::InvalidScramMessage(_)) => {
                self.failures.failed(&user, client.socket_addr());
                Err(fatal(
                    "28P01",
                    &format!("password authentication failed for user \"{user}\""),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

fn fatal(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_keep_no_password_and_salts_differ() {
        let a = user("ann", "secret").unwrap();
        let b = user("bob", "secret").unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.salted_password, b.salted_password);
        assert!(!a.salted_password.contains("secret"));
        let salt = unhex(&a.salt).unwrap();
        assert_eq!(
            unhex(&a.salted_password).unwrap(),
            gen_salted_password("secret", &salt, ITERATIONS as usize)
        );
        assert!(user("ann", "").is_err());
    }
}
