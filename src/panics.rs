//! A panic while serving one client ends that client's connection, not the server: both
//! front ends (pgwire, kafka) run each connection through [`contain`], and the process's
//! panic hook ([`install_hook`]) records such a panic for the connection to log as one line.

use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

tokio::task_local! {
    /// Set while a contained future runs: where the hook leaves a panic's message.
    static CONNECTION_PANIC: RefCell<Option<String>>;
}

/// Runs `serve`; a panic inside it (a decoder that panics on a malformed message, say)
/// comes back as `Err` with its message and location.
pub async fn contain<F: Future>(serve: F) -> Result<F::Output, String> {
    CONNECTION_PANIC
        .scope(RefCell::new(None), async {
            match AssertUnwindSafe(serve).catch_unwind().await {
                Ok(output) => Ok(output),
                Err(_) => Err(CONNECTION_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_default()),
            }
        })
        .await
}

/// Installs the process's panic hook: a panic inside [`contain`] is recorded for the
/// connection to log when it closes; any other panic is reported as usual.
pub fn install_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let what = || {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            match info.location() {
                Some(at) => format!("{message} (at {}:{})", at.file(), at.line()),
                None => message,
            }
        };
        let recorded = CONNECTION_PANIC.try_with(|slot| *slot.borrow_mut() = Some(what()));
        if recorded.is_err() {
            default(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_comes_back_as_its_message() {
        install_hook();
        let out: Result<(), String> = contain(async { panic!("a malformed message") }).await;
        let what = out.unwrap_err();
        assert!(what.contains("a malformed message"), "{what}");
        assert_eq!(contain(async { 42 }).await, Ok(42));
    }
}
