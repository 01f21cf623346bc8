//! Who may connect: everyone (`--auth trust`, the default), or users with a password checked
//! by SCRAM-SHA-256 (`--auth password`), as PostgreSQL's `scram-sha-256` (RFC 5802, 7677).
//!
//! Users are catalog entries ([`UserDef`]) holding a SCRAM verifier: a random salt, the
//! iteration count, `StoredKey` and `ServerKey`; never the password, and nothing that lets
//! one log in. The superuser `runnel` gets its password from `RUNNEL_PASSWORD` the first
//! time the server starts in password mode; `CREATE USER` and `DROP USER` manage the others.
//! A user that does not exist gets a made-up salt that is the same on every attempt, and the
//! exchange runs to its end, so a client cannot tell a wrong name from a wrong password.
//! Failed logins are logged, with how many in a row for that name.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::{Sink, SinkExt};
use pgwire::api::auth::StartupHandler;

use crate::admission::Ticket;
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, Startup};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use crate::catalog::{Catalog, UserDef};
use crate::error::{Error, Result};
use crate::storage::now_ms;

pub use crate::catalog::access::SUPERUSER;

/// SCRAM's iteration count for new passwords (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

const MECHANISM: &str = "SCRAM-SHA-256";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Every user name is accepted without a password.
    Trust,
    /// SCRAM-SHA-256 against the users of the catalog.
    Password,
}

/// A SCRAM verifier: what the server keeps to check a password.
struct Verifier {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("no random numbers".into()))?;
    Ok(bytes)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

impl Verifier {
    fn new(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        // SaltedPassword := Hi(Normalize(password), salt, i); the password is taken as given
        // (PostgreSQL falls back to the same when SASLprep does not apply).
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).expect("iterations > 0"),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        Verifier {
            salt,
            iterations,
            stored_key: digest::digest(&digest::SHA256, &client_key)
                .as_ref()
                .to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    fn of(user: &UserDef) -> Option<Verifier> {
        if user.stored_key.is_empty() {
            return None; // no password: nothing matches
        }
        Some(Verifier {
            salt: BASE64.decode(&user.salt).ok()?,
            iterations: user.iterations,
            stored_key: BASE64.decode(&user.stored_key).ok()?,
            server_key: BASE64.decode(&user.server_key).ok()?,
        })
    }
}

/// A new user's catalog entry for `password`.
/// A new user's catalog entry for `password`; with none, the user cannot log in with a
/// password (`--auth trust` lets them in by name).
pub fn user(name: &str, password: Option<&str>) -> Result<UserDef> {
    let mut user = UserDef {
        name: name.to_string(),
        salt: String::new(),
        iterations: ITERATIONS,
        stored_key: String::new(),
        server_key: String::new(),
        created_at_ms: now_ms(),
        superuser: false,
        roles: Default::default(),
    };
    if let Some(password) = password {
        if password.is_empty() {
            return Err(Error::plan("28P01", "a password may not be empty"));
        }
        let v = Verifier::new(password, random::<16>()?.to_vec(), ITERATIONS);
        user.salt = BASE64.encode(&v.salt);
        user.iterations = v.iterations;
        user.stored_key = BASE64.encode(&v.stored_key);
        user.server_key = BASE64.encode(&v.server_key);
    }
    Ok(user)
}

/// Failed logins in a row, per user (see [`Auth::failed`]).
#[derive(Debug, Default)]
struct Failures(Mutex<HashMap<String, u32>>);

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

/// What every connection's [`Gate`] shares.
#[derive(Clone)]
pub struct Auth {
    pub mode: AuthMode,
    pub tls_required: bool,
    catalog: Arc<Catalog>,
    /// Keys the made-up salts of names that are not users.
    decoy: [u8; 32],
    failures: Arc<Failures>,
}

impl Auth {
    pub fn new(mode: AuthMode, tls_required: bool, catalog: Arc<Catalog>) -> Result<Auth> {
        Ok(Auth {
            mode,
            tls_required,
            catalog,
            decoy: random()?,
            failures: Arc::default(),
        })
    }

    /// A connection's gate; `trusted` lets it in once it may enter, into a session slot of
    /// `ticket`.
    pub fn gate<H>(&self, trusted: Arc<H>, ticket: Arc<Ticket>) -> Gate<H> {
        Gate {
            auth: self.clone(),
            trusted,
            ticket,
            exchange: Mutex::new(Exchange::Idle),
        }
    }

    /// Takes a session slot for `user`, who has proven who they are: 53300 when none is
    /// free for them (superusers may take the reserved ones).
    fn admit(&self, ticket: &Ticket, user: &str) -> PgWireResult<()> {
        let who = self
            .catalog
            .snapshot()
            .principal(user, self.mode == AuthMode::Trust);
        ticket.admit(who.superuser).map_err(|message| {
            tracing::warn!(user, message, "refused a client: no connection slot");
            fatal("53300", message)
        })
    }

    /// Whether `password` is `user`'s, checked against the SCRAM verifier the catalog keeps
    /// (for clients that send a password itself, as the HTTP console's Basic
    /// authentication does). A failure is logged and counted as a failed login is.
    pub fn check_password(&self, user: &str, password: &str, peer: std::net::SocketAddr) -> bool {
        let Ok(verifier) = self.verifier(user) else {
            return false;
        };
        let offered = Verifier::new(password, verifier.salt.clone(), verifier.iterations);
        let matches = equal_in_constant_time(&offered.stored_key, &verifier.stored_key);
        if matches {
            self.failures.succeeded(user);
        } else {
            self.failed(user, peer);
        }
        matches
    }

    /// Logs a failed login, and counts it if `user` is one: a name that is not is not kept,
    /// so a client making names up cannot grow the count.
    fn failed(&self, user: &str, peer: std::net::SocketAddr) {
        if self.catalog.snapshot().users.contains_key(user) {
            self.failures.failed(user, peer);
        } else {
            tracing::warn!(user, %peer, "password authentication failed: no such user");
        }
    }

    /// The verifier of `name`, or, for a name that is not a user, one that no password
    /// matches, with a salt that is the same each time (as a real user's would be).
    fn verifier(&self, name: &str) -> Result<Verifier> {
        if let Some(v) = self
            .catalog
            .snapshot()
            .users
            .get(name)
            .and_then(Verifier::of)
        {
            return Ok(v);
        }
        let salt = hmac_sha256(&self.decoy, name.as_bytes())[..16].to_vec();
        Ok(Verifier {
            salt,
            iterations: ITERATIONS,
            stored_key: random::<32>()?.to_vec(),
            server_key: random::<32>()?.to_vec(),
        })
    }
}

/// Where one connection's SCRAM exchange is.
enum Exchange {
    Idle,
    /// The mechanisms were offered; the start-up message is kept for when the client is in.
    Offered {
        startup: Startup,
    },
    /// The server-first message went out.
    Challenged {
        startup: Startup,
        verifier: Verifier,
        /// client-first-message-bare "," server-first-message
        messages: String,
        nonce: String,
        gs2_header: String,
    },
}

/// What a connection does before its first query: refuse it without TLS if TLS is required,
/// then let it in (trust) or check its password (SCRAM).
pub struct Gate<H> {
    auth: Auth,
    trusted: Arc<H>,
    ticket: Arc<Ticket>,
    exchange: Mutex<Exchange>,
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
            && self.auth.tls_required
            && !client.is_secure()
        {
            tracing::warn!(peer = %client.socket_addr(), "refused a client without TLS (--tls-required)");
            return Err(fatal(
                "28000",
                "this server requires TLS: connect with sslmode=require",
            ));
        }
        if self.auth.mode == AuthMode::Trust {
            if let PgWireFrontendMessage::Startup(startup) = &message {
                let user = startup.parameters.get("user").cloned().unwrap_or_default();
                self.auth.admit(&self.ticket, &user)?;
            }
            return self.trusted.on_startup(client, message).await;
        }
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let step = self.step(client, message).await;
        let admitted = match step {
            Ok(Some(startup)) => startup,
            Ok(None) => return Ok(()),
            Err(e) => {
                if matches!(&e, PgWireError::UserError(info) if info.code == "28P01") {
                    self.auth.failed(&user, client.socket_addr());
                }
                return Err(e);
            }
        };
        self.auth.failures.succeeded(&user);
        self.auth.admit(&self.ticket, &user)?;
        // In: the rest of start-up (keys, parameters, ReadyForQuery) as without a password.
        self.trusted
            .on_startup(client, PgWireFrontendMessage::Startup(admitted))
            .await
    }
}

impl<H> Gate<H> {
    /// One message of the exchange; the start-up message once the password is proven.
    async fn step<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<Option<Startup>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = std::mem::replace(&mut *self.exchange.lock().expect("lock"), Exchange::Idle);
        match (state, message) {
            (Exchange::Idle, PgWireFrontendMessage::Startup(mut startup)) => {
                pgwire::api::auth::protocol_negotiation(client, &startup).await?;
                pgwire::api::auth::save_startup_parameters_to_metadata(client, &startup);
                // Replayed once the client is in: with the version agreed now.
                let (major, minor) = client.protocol_version().version_number();
                startup.protocol_number_major = major;
                startup.protocol_number_minor = minor;
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                        vec![MECHANISM.into()],
                    )))
                    .await?;
                *self.exchange.lock().expect("lock") = Exchange::Offered { startup };
                Ok(None)
            }
            (Exchange::Offered { startup }, PgWireFrontendMessage::PasswordMessageFamily(m)) => {
                let first = m.into_sasl_initial_response()?;
                if first.auth_method != MECHANISM {
                    return Err(fatal(
                        "28000",
                        &format!("unsupported SASL mechanism {}", first.auth_method),
                    ));
                }
                let data = first.data.unwrap_or_default();
                let text = std::str::from_utf8(&data).map_err(|_| malformed())?;
                // gs2-header ("n,," or "y,,": no channel binding) then client-first-bare.
                let (gs2_header, bare) = match text.strip_prefix("n,,").or(text.strip_prefix("y,,"))
                {
                    Some(bare) => (&text[..3], bare),
                    None => return Err(fatal("28000", "SCRAM channel binding is not supported")),
                };
                let client_nonce = attribute(bare, 'r').ok_or_else(malformed)?;
                let user = client
                    .metadata()
                    .get(METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                let verifier = self
                    .auth
                    .verifier(&user)
                    .map_err(|e| fatal("XX000", &e.to_string()))?;
                let server_nonce =
                    BASE64.encode(random::<18>().map_err(|e| fatal("XX000", &e.to_string()))?);
                let nonce = format!("{client_nonce}{server_nonce}");
                let server_first = format!(
                    "r={nonce},s={},i={}",
                    BASE64.encode(&verifier.salt),
                    verifier.iterations
                );
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLContinue(server_first.clone().into_bytes().into()),
                    ))
                    .await?;
                *self.exchange.lock().expect("lock") = Exchange::Challenged {
                    startup,
                    verifier,
                    messages: format!("{bare},{server_first}"),
                    nonce,
                    gs2_header: gs2_header.to_string(),
                };
                Ok(None)
            }
            (
                Exchange::Challenged {
                    startup,
                    verifier,
                    messages,
                    nonce,
                    gs2_header,
                },
                PgWireFrontendMessage::PasswordMessageFamily(m),
            ) => {
                let last = m.into_sasl_response()?;
                let text = std::str::from_utf8(&last.data).map_err(|_| malformed())?;
                let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(malformed)?;
                let binding = attribute(without_proof, 'c').ok_or_else(malformed)?;
                if binding != BASE64.encode(&gs2_header)
                    || attribute(without_proof, 'r') != Some(&nonce)
                {
                    return Err(malformed());
                }
                let proof = BASE64.decode(proof).map_err(|_| malformed())?;
                let auth_message = format!("{messages},{without_proof}");
                let signature = hmac_sha256(&verifier.stored_key, auth_message.as_bytes());
                let proven = proof.len() == signature.len() && {
                    let client_key: Vec<u8> =
                        proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
                    let stored = digest::digest(&digest::SHA256, &client_key);
                    equal_in_constant_time(stored.as_ref(), &verifier.stored_key)
                };
                if !proven {
                    let user = client
                        .metadata()
                        .get(METADATA_USER)
                        .cloned()
                        .unwrap_or_default();
                    return Err(fatal(
                        "28P01",
                        &format!("password authentication failed for user \"{user}\""),
                    ));
                }
                let server_signature = hmac_sha256(&verifier.server_key, auth_message.as_bytes());
                let server_final = format!("v={}", BASE64.encode(server_signature));
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::SASLFinal(server_final.into_bytes().into()),
                    ))
                    .await?;
                Ok(Some(startup))
            }
            _ => Err(fatal("08P01", "unexpected message during authentication")),
        }
    }
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of `name=` in a comma-separated SCRAM message.
fn attribute(message: &str, name: char) -> Option<&str> {
    message
        .split(',')
        .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
}

fn malformed() -> PgWireError {
    fatal("08P01", "malformed SCRAM message")
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

    /// RFC 7677's example: user "user", password "pencil".
    #[test]
    fn the_rfc_7677_exchange_verifies() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::new("pencil", salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = BASE64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = hmac_sha256(&v.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(
            digest::digest(&digest::SHA256, &client_key).as_ref(),
            v.stored_key.as_slice()
        );
        let server_signature = hmac_sha256(&v.server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn users_keep_a_verifier_and_salts_differ() {
        let a = user("ann", Some("secret")).unwrap();
        let b = user("bob", Some("secret")).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(user("ann", Some("")).is_err());
    }
}
