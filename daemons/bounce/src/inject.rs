//! The hand-over of a report to cleanup, through the runtime's [`CleanupLink`] (one channel for
//! the life of the process, reopened after a failure, replaced at once when found closed before
//! a report begins): `Begin` with sender `<>` and a local client, the report's recipients,
//! its text, `End`, and cleanup's one answer.
//!
//! Trusts: nothing cleanup sends; its answer is decoded by `protocol`. A broken or closed
//! channel, or no progress within [`CLEANUP_TIMEOUT`], is a [`HandOffError`], which the service
//! reports to the queue manager as a temporary failure.

use daemon::cleanup_client::{local_begin, plain_recipients, CleanupLink, Connect, HandOffError};
use protocol::{FromCleanup, ReversePath};

use crate::report::Report;

pub use daemon::cleanup_client::CLEANUP_TIMEOUT;

/// Hands `report` over on `link` and returns cleanup's answer. On any error the link has
/// dropped its channel, so cleanup discards the partial message.
pub fn inject(
    link: &mut CleanupLink,
    connect: &mut Connect<'_>,
    report: &Report,
) -> Result<FromCleanup, HandOffError> {
    let begin = local_begin(
        ReversePath::Null,
        report.flags.clone(),
        report.received.clone(),
    );
    let recipients = plain_recipients(&report.recipients);
    link.hand_over(connect, begin, &recipients, &[&report.text])
}
