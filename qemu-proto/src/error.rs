//! Decode/encode errors of the wire format.
//!
//! Owns [`ProtoError`], the single error type returned by every fallible
//! function of this crate. Invariant: decoding never panics; any malformed or
//! short input is reported through one of these variants instead.

/// Why a buffer could not be decoded, or a value could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The input buffer is shorter than the structure being decoded.
    #[error("truncated input: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A name or tag does not fit its fixed-size, NUL-terminated field.
    #[error("name too long: {len} bytes, must be shorter than {max}")]
    NameTooLong {
        /// Length of the offending name in bytes.
        len: usize,
        /// Size of the fixed field (the name must be strictly shorter).
        max: usize,
    },
    /// A VDI name was empty.
    #[error("empty name")]
    EmptyName,
    /// A VDI name contained a NUL byte.
    #[error("name contains a NUL byte")]
    NulInName,
    /// A buffer had a length that is not valid for the named structure.
    #[error("bad length for {what}: {len} bytes")]
    BadLength {
        /// What was being decoded or encoded.
        what: &'static str,
        /// The offending length.
        len: usize,
    },
    /// More nodes than a node array can hold (`SD_MAX_NODES` or the slot count).
    #[error("too many nodes: {0}")]
    TooManyNodes(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_readable() {
        assert_eq!(
            ProtoError::Truncated { need: 48, have: 3 }.to_string(),
            "truncated input: need 48 bytes, have 3"
        );
        assert_eq!(
            ProtoError::NameTooLong { len: 300, max: 256 }.to_string(),
            "name too long: 300 bytes, must be shorter than 256"
        );
        assert_eq!(
            ProtoError::TooManyNodes(7000).to_string(),
            "too many nodes: 7000"
        );
    }
}
