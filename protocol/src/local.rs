//! What a `local` delivery child tells the agent's privileged parent, through the pipe the
//! parent made for it: the child runs as the recipient (or as `nobody` for an alias's command
//! or file), reads the message and the user's `.forward` — bytes a remote client or a local
//! user controls — and answers with one of these, so that the uid-0 parent reads no such byte
//! itself, only this decoded message.
//!
//! Trusts: nothing. A child runs the recipient's identity and may have been subverted by what
//! it read (a hostile `.forward`), so every string is bounded and checked here: no NUL or
//! control characters, file and include paths absolute, commands non-empty.
//!
//! [`ToLauncher`] is the other direction of the agent's split: the parent, which may not
//! `execve`, asks its command launcher (a process forked before the parent narrowed its
//! filter) to run one `|command` delivery. The launcher validates it as it would any message
//! from another process: a uid of 0, a relative home, a NUL or a control character in the
//! command or the environment is refused.

use serde::{Deserialize, Serialize};

use crate::bounded::{BoundedString, BoundedVec};
use crate::codec::{InvalidValue, Message};
use crate::queue::Diagnostic;
use crate::smtp::EnhancedStatus;

/// Entries of one `.forward` (Postfix reads a `.forward` as an include file; 1000 entries is
/// far beyond any real one, and the file itself is read to at most 64 KiB).
pub const MAX_FORWARD_ENTRIES: usize = 1000;
/// One entry: an address (at most 256 octets as a path) or a command line or a path.
pub const MAX_ENTRY_LEN: usize = 4096;
/// The largest report a child may send (its whole pipe output is read up to this).
pub const MAX_REPORT: usize = 256 << 10;

type Text = BoundedString<MAX_ENTRY_LEN>;

/// One destination a `.forward` names, as `policy::aliases` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForwardEntry {
    /// A local name or `user@domain`; `escaped` for `\user`.
    Address { address: Text, escaped: bool },
    /// `|command`: the text after the bar.
    Command(Text),
    /// `/file`: an absolute path.
    File(Text),
    /// `:include:/path`.
    Include(Text),
}

/// Why a child's report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChildReportError {
    #[error("a forward entry has a control character")]
    Control,
    #[error("a forward entry is empty")]
    Empty,
    #[error("a file or include path in a forward entry is not absolute")]
    Relative,
    #[error("a result's status does not fit a delivery result")]
    Status,
    #[error("a command request names root as the identity")]
    Root,
    #[error("a command request's home is not an absolute path")]
    Home,
    #[error("a command request's environment has a bad name or value")]
    Environment,
    #[error("a command request's time limit is zero")]
    Limit,
}

impl From<ChildReportError> for InvalidValue {
    fn from(e: ChildReportError) -> InvalidValue {
        InvalidValue::LocalChild(e)
    }
}

/// From a delivery child to the `local` agent's parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromDeliveryChild {
    /// The delivery's result: a 2.x.x, 4.x.x or 5.x.x status and its text.
    Result {
        status: EnhancedStatus,
        diagnostic: Diagnostic,
    },
    /// The user's `.forward`, parsed by the child that read it.
    Forward(BoundedVec<ForwardEntry, MAX_FORWARD_ENTRIES>),
    /// The user has no `.forward`.
    NoForward,
}

/// Supplementary groups of one identity (the kernel's `NGROUPS_MAX` is 65536; accounts with
/// more than this many groups are not real).
pub const MAX_GROUPS: usize = 1024;
/// Variables of a command's environment (Postfix sets fewer than ten).
pub const MAX_ENV: usize = 32;

/// From the `local` agent's parent to its command launcher, with the queue file's descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToLauncher {
    /// Run `/bin/sh -c command` as `uid`/`gid`/`groups` in `home`, the message on its input.
    Run(CommandRequest),
}

/// One command delivery, as the parent resolved it from an alias table or a `.forward`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRequest {
    pub uid: u32,
    pub gid: u32,
    pub groups: BoundedVec<u32, MAX_GROUPS>,
    pub command: Text,
    pub home: Text,
    pub env: BoundedVec<(Text, Text), MAX_ENV>,
    /// `command_time_limit`, in milliseconds.
    pub limit_ms: u64,
    /// `Return-Path:` without brackets (empty for `<>`) and `Delivered-To:`.
    pub sender: Text,
    pub recipient: Text,
    /// The message's place in the queue file passed with the request.
    pub content_offset: u64,
    pub content_len: u64,
}

impl CommandRequest {
    fn check(&self) -> Result<(), ChildReportError> {
        if self.uid == 0 {
            return Err(ChildReportError::Root);
        }
        if self.command.is_empty() {
            return Err(ChildReportError::Empty);
        }
        if !self.home.starts_with('/') {
            return Err(ChildReportError::Home);
        }
        if self.limit_ms == 0 {
            return Err(ChildReportError::Limit);
        }
        let control = |t: &Text| t.chars().any(char::is_control);
        if [&self.command, &self.home, &self.sender, &self.recipient]
            .into_iter()
            .any(control)
        {
            return Err(ChildReportError::Control);
        }
        for (name, value) in self.env.iter() {
            let good_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !good_name || control(value) {
                return Err(ChildReportError::Environment);
            }
        }
        Ok(())
    }
}

impl Message for ToLauncher {
    fn kind(&self) -> &'static str {
        match self {
            ToLauncher::Run(_) => "Run",
        }
    }

    /// The queue file.
    fn fd_count(&self) -> usize {
        1
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            ToLauncher::Run(r) => Ok(r.check()?),
        }
    }
}

impl ForwardEntry {
    fn check(&self) -> Result<(), ChildReportError> {
        let (text, path) = match self {
            ForwardEntry::Address { address, .. } => (address, false),
            ForwardEntry::Command(c) => (c, false),
            ForwardEntry::File(p) | ForwardEntry::Include(p) => (p, true),
        };
        if text.is_empty() {
            return Err(ChildReportError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(ChildReportError::Control);
        }
        if path && !text.starts_with('/') {
            return Err(ChildReportError::Relative);
        }
        Ok(())
    }
}

impl Message for FromDeliveryChild {
    fn kind(&self) -> &'static str {
        match self {
            FromDeliveryChild::Result { .. } => "Result",
            FromDeliveryChild::Forward(_) => "Forward",
            FromDeliveryChild::NoForward => "NoForward",
        }
    }

    fn validate(&self) -> Result<(), InvalidValue> {
        match self {
            FromDeliveryChild::Result { status, .. } => {
                if matches!(status.class(), 2 | 4 | 5) {
                    Ok(())
                } else {
                    Err(ChildReportError::Status.into())
                }
            }
            FromDeliveryChild::Forward(entries) => {
                for e in entries.iter() {
                    e.check()?;
                }
                Ok(())
            }
            FromDeliveryChild::NoForward => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    fn text(s: &str) -> Text {
        Text::try_from(s.to_owned()).unwrap()
    }

    #[test]
    fn reports_round_trip_and_bad_entries_are_refused() {
        let fwd = FromDeliveryChild::Forward(
            vec![
                ForwardEntry::Address {
                    address: text("bob@example.org"),
                    escaped: false,
                },
                ForwardEntry::Command(text("procmail")),
                ForwardEntry::File(text("/home/u/archive")),
            ]
            .try_into()
            .unwrap(),
        );
        let bytes = encode(&fwd).unwrap();
        assert_eq!(decode::<FromDeliveryChild>(&bytes).unwrap(), fwd);
        for bad in [
            ForwardEntry::File(text("relative/file")),
            ForwardEntry::Command(text("")),
            ForwardEntry::Address {
                address: text("a\nb"),
                escaped: false,
            },
        ] {
            let msg = FromDeliveryChild::Forward(vec![bad].try_into().unwrap());
            assert!(encode(&msg).is_err(), "{msg:?}");
            let raw = postcard::to_allocvec(&msg).unwrap();
            assert!(decode::<FromDeliveryChild>(&raw).is_err(), "{msg:?}");
        }
        let raw = encode(&FromDeliveryChild::NoForward).unwrap();
        assert!(decode::<FromDeliveryChild>(&[raw.as_slice(), b"x"].concat()).is_err());
    }

    fn request() -> CommandRequest {
        CommandRequest {
            uid: 1000,
            gid: 1000,
            groups: vec![27].try_into().unwrap(),
            command: text("procmail -a x"),
            home: text("/home/u"),
            env: vec![(text("HOME"), text("/home/u")), (text("USER"), text("u"))]
                .try_into()
                .unwrap(),
            limit_ms: 1000,
            sender: text(""),
            recipient: text("u@example.test"),
            content_offset: 10,
            content_len: 20,
        }
    }

    #[test]
    fn command_requests_round_trip_and_bad_ones_are_refused() {
        let good = ToLauncher::Run(request());
        let bytes = encode(&good).unwrap();
        assert_eq!(decode::<ToLauncher>(&bytes).unwrap(), good);
        let bad: [fn(&mut CommandRequest); 7] = [
            |r| r.uid = 0,
            |r| r.command = text(""),
            |r| r.command = text("a\nb"),
            |r| r.home = text("home/u"),
            |r| r.limit_ms = 0,
            |r| r.env = vec![(text("lower"), text("x"))].try_into().unwrap(),
            |r| r.env = vec![(text("HOME"), text("a\rb"))].try_into().unwrap(),
        ];
        for (i, spoil) in bad.iter().enumerate() {
            let mut r = request();
            spoil(&mut r);
            let msg = ToLauncher::Run(r);
            assert!(encode(&msg).is_err(), "case {i}: {msg:?}");
            let raw = postcard::to_allocvec(&msg).unwrap();
            assert!(decode::<ToLauncher>(&raw).is_err(), "case {i}: {msg:?}");
        }
    }
}
