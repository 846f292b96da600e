//! Errors a user can act on, and how they reach the terminal.
//!
//! Owns [`UserError`] (exit code 1, with a `hint:`) and the [`Hinted`] trait that lets typed errors of other
//! layers (`ConfigError`, `StoreError`, ...) carry a hint; they become a `UserError` where they reach a command
//! ([`from_hinted`]). `main` maps everything else to exit code 2. Must not depend on other modules.

use std::fmt;

/// An error with an optional hint line for the user.
pub trait Hinted: std::error::Error {
    fn hint(&self) -> Option<&str>;
}

/// A mistake in what the user asked for: bad flags, unknown names, a missing file. Exit code 1.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

impl Hinted for UserError {
    fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

/// What `main` needs to know about a failed command.
pub struct Classified<'a> {
    /// 1 for user errors, 2 for unexpected ones.
    pub code: u8,
    pub hint: Option<&'a str>,
}

/// Finds a user-facing error anywhere in the chain.
pub fn classify(err: &anyhow::Error) -> Classified<'_> {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<UserError>() {
            return Classified { code: 1, hint: e.hint() };
        }
    }
    Classified { code: 2, hint: None }
}

/// A typed error the user can act on, as a [`UserError`] with the same words and hint.
pub fn from_hinted(e: &dyn Hinted) -> UserError {
    let u = user(e.to_string());
    match e.hint() {
        Some(h) => u.with_hint(h),
        None => u,
    }
}

/// Shorthand: `return Err(user("...").with_hint("..."))`.
pub fn user(message: impl Into<String>) -> UserError {
    UserError::new(message)
}

/// A command that finished its output but must exit with this code (e.g. 3: a balance below the threshold).
#[derive(Debug)]
pub struct Exit(pub u8);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}
