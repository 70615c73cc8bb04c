//! The error type of every dog command.
//!
//! Sheepdog's `dog` prints plain error lines (no prefix) on stderr and exits
//! with one of the codes of `include/exits.h`. [`DogError`] carries exactly
//! that: the text to print and the exit code. `main` prints the text and
//! exits; nothing else in the crate prints errors or calls `exit`.

use std::io;

/// Exit codes of `include/exits.h` (the whole table, though not every code
/// is used yet).
#[allow(dead_code)]
pub mod exit {
    /// The command succeeded.
    pub const SUCCESS: i32 = 0;
    /// The command failed.
    pub const FAILURE: i32 = 1;
    /// Something is wrong with the cluster or the local host.
    pub const SYSFAIL: i32 = 2;
    /// The object already exists.
    pub const EXISTS: i32 = 3;
    /// No space is left in the cluster.
    pub const FULL: i32 = 4;
    /// The object does not exist.
    pub const MISSING: i32 = 5;
    /// Invalid command, arguments or options.
    pub const USAGE: i32 = 64;
}

/// A failed dog command: the exact stderr text and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum DogError {
    /// A failure with its final message (possibly several lines) and exit code.
    #[error("{message}")]
    Exit {
        /// Text for stderr, without the trailing newline.
        message: String,
        /// Process exit code.
        code: i32,
    },
    /// Invalid arguments: `message` (if not empty) goes to stderr, then the
    /// subcommand usage goes to stdout, and dog exits with 64.
    #[error("{message}")]
    Usage {
        /// Text for stderr, may be empty.
        message: String,
    },
    /// The TCP connection to a sheep could not be established.
    #[error("failed to connect to {addr}:{port}: {reason}")]
    Connect {
        /// Numeric address as Sheepdog's `addr_to_str` prints it.
        addr: String,
        /// TCP port.
        port: u16,
        /// strerror text of the failure.
        reason: String,
    },
    /// The user did not confirm a prompt: nothing more is printed, exit 0.
    #[error("")]
    Declined,
}

impl DogError {
    /// A failure with exit code 1.
    pub fn failure(message: impl Into<String>) -> Self {
        DogError::Exit {
            message: message.into(),
            code: exit::FAILURE,
        }
    }

    /// A failure with exit code 2.
    pub fn sysfail(message: impl Into<String>) -> Self {
        DogError::Exit {
            message: message.into(),
            code: exit::SYSFAIL,
        }
    }

    /// A usage error (exit 64, usage printed after the message).
    pub fn usage(message: impl Into<String>) -> Self {
        DogError::Usage {
            message: message.into(),
        }
    }

    /// The exit code dog terminates with.
    pub fn code(&self) -> i32 {
        match self {
            DogError::Exit { code, .. } => *code,
            DogError::Usage { .. } => exit::USAGE,
            DogError::Connect { .. } => exit::SYSFAIL,
            DogError::Declined => exit::SUCCESS,
        }
    }

    /// Appends one more stderr line and replaces the exit code, as when a
    /// Sheepdog caller prints its own message after a failed helper.
    pub fn then(self, line: impl AsRef<str>, code: i32) -> Self {
        let mut message = self.to_string();
        if !message.is_empty() {
            message.push('\n');
        }
        message.push_str(line.as_ref());
        DogError::Exit { message, code }
    }

    /// Keeps the text but replaces the exit code.
    pub fn with_code(self, code: i32) -> Self {
        match self {
            DogError::Usage { .. } | DogError::Declined => self,
            other => DogError::Exit {
                message: other.to_string(),
                code,
            },
        }
    }
}

/// The C library's strerror text for an I/O error (Rust appends
/// " (os error N)", Sheepdog's `%m` does not).
pub fn strerror(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(pos) if err.raw_os_error().is_some() => text[..pos].to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strerror_drops_os_error_suffix() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(strerror(&e), "Connection refused");
    }

    #[test]
    fn then_appends_a_line_and_sets_code() {
        let e = DogError::Connect {
            addr: "127.0.0.1".into(),
            port: 7000,
            reason: "Connection refused".into(),
        }
        .then("Failed to get node list", exit::SYSFAIL);
        assert_eq!(
            e.to_string(),
            "failed to connect to 127.0.0.1:7000: Connection refused\nFailed to get node list"
        );
        assert_eq!(e.code(), 2);
    }

    #[test]
    fn codes() {
        assert_eq!(DogError::usage("x").code(), 64);
        assert_eq!(DogError::failure("x").code(), 1);
        assert_eq!(DogError::sysfail("x").code(), 2);
        assert_eq!(DogError::Declined.code(), 0);
    }
}
