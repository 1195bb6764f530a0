//! RFC 5321 addresses: domains, address literals, mailboxes and paths, with the
//! RFC 6531 (SMTPUTF8) extensions only when the caller says SMTPUTF8 is in effect.
//!
//! Trusts: nothing; every input is a string a client or a peer chose. Errors carry
//! positions and lengths, never the offending text, so logging an error cannot
//! inject anything; the caller decides how to log the input itself.
//!
//! Decisions where the RFCs leave room:
//! - Non-ASCII (only with SMTPUTF8) must not be a control or white-space character,
//!   and in a domain not one of the dots that IDNA maps to `.`, so no address can
//!   smuggle line breaks, invisible separators or look-alike label boundaries.
//! - Label and domain lengths are counted in UTF-8 octets of what was received; the
//!   A-label (punycode) limits are checked where a name is converted for DNS.
//! - General address literals (`[tag:content]`) are refused: no tag other than
//!   `IPv6` is registered and Postern cannot route to one.

mod domain;
mod mailbox;
mod path;

pub use domain::{AddressLiteral, Domain, Host, MAX_DOMAIN_LEN, MAX_LABEL_LEN};
pub use mailbox::{Mailbox, MAX_LOCAL_PART_LEN, MAX_MAILBOX_LEN};
pub use path::{parse_path, ForwardPath, Path, ReversePath, MAX_PATH_LEN};

/// Why a string is not a valid address of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("domain is empty")]
    EmptyDomain,
    #[error("domain is {len} octets, more than {MAX_DOMAIN_LEN}")]
    DomainTooLong { len: usize },
    #[error("domain label {label} is empty")]
    EmptyLabel { label: usize },
    #[error("domain label {label} is {len} octets, more than {MAX_LABEL_LEN}")]
    LabelTooLong { label: usize, len: usize },
    #[error("domain label {label} starts or ends with a hyphen")]
    LabelHyphen { label: usize },
    #[error("character {ch:?} at octet {offset} is not allowed in a domain")]
    DomainChar { offset: usize, ch: char },
    #[error("non-ASCII character at octet {offset} of the {what} without SMTPUTF8")]
    NonAscii { what: &'static str, offset: usize },
    #[error("address literal is not enclosed in [ ]")]
    LiteralBrackets,
    #[error("address literal is not a valid IPv4 address")]
    BadIpv4Literal,
    #[error("address literal is not a valid IPv6 address")]
    BadIpv6Literal,
    #[error("general address literals ([tag:...]) are refused")]
    GeneralLiteral,
    #[error("local part is empty")]
    EmptyLocalPart,
    #[error("local part is {len} octets, more than {MAX_LOCAL_PART_LEN}")]
    LocalPartTooLong { len: usize },
    #[error("local part has an empty atom (a leading, trailing or doubled dot) at octet {offset}")]
    LocalPartDot { offset: usize },
    #[error("character {ch:?} at octet {offset} is not allowed in a local part")]
    LocalPartChar { offset: usize, ch: char },
    #[error("quoted local part is not closed")]
    UnterminatedQuote,
    #[error("mailbox has no @ after its local part")]
    MissingAt,
    #[error("mailbox is {len} octets, more than {MAX_MAILBOX_LEN}")]
    MailboxTooLong { len: usize },
    #[error("path is {len} octets, more than {MAX_PATH_LEN}")]
    PathTooLong { len: usize },
    #[error("path is not enclosed in < >")]
    PathBrackets,
    #[error("source route before the mailbox is malformed")]
    BadSourceRoute,
    #[error("the null path <> is not allowed here")]
    NullPathNotAllowed,
    #[error("<Postmaster> without a domain is allowed only as a recipient")]
    PostmasterNotAllowed,
}

/// Non-ASCII characters allowed under SMTPUTF8 in local parts and domains.
fn allowed_non_ascii(ch: char) -> bool {
    !ch.is_ascii() && !ch.is_control() && !ch.is_whitespace()
}

/// The first non-ASCII character's offset, for the `NonAscii` error.
fn first_non_ascii(s: &str) -> Option<usize> {
    s.bytes().position(|b| !b.is_ascii())
}
