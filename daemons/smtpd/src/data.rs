//! DATA (RFC 5321 section 4.1.1.4): the message text after `354`, read by the
//! [`DotReader`] and streamed to cleanup in `Content` chunks as it arrives.
//!
//! Trusts: nothing in the text. Memory is bounded: one input buffer and at most two
//! chunks of output, whatever the length of the message or of its lines.
//!
//! Checked before `354`, as Postfix does: a transaction with recipients
//! (`503 5.5.1 Error: need RCPT command` without MAIL, `554 5.5.1 Error: no valid
//! recipients` when every RCPT was refused), not during BDAT (`DATA after BDAT`), and a
//! channel to cleanup (`451 4.3.0 Error: queue file write error`). While reading, the
//! stored size is checked against `message_size_limit`: past it, cleanup is told to
//! `Abort` and the rest of the data is read and dropped, then
//! `552 5.3.4 Error: message file too big`. The size is that of the text as stored,
//! without the Received: header. Under `smtpd_forbid_bare_newline = reject` a bare LF
//! ends the session (`521 5.5.2 ... bare <LF> received`, the code from `smtpd_forbid_bare_newline_reject_code`). Any reply ends the
//! transaction.

use protocol::cleanup::CHUNK_MAX;
use protocol::Reply;

use crate::conn::ConnError;
use crate::session::{Flow, Session};
use protocol::smtp::data::{DotReader, Feed};

impl Session<'_, '_> {
    pub(crate) fn data(&mut self, crlf: bool) -> Result<Flow, ConnError> {
        let refusal = match &self.txn {
            None => Some(Reply::need_rcpt()),
            Some(txn) if txn.bdat.is_some() => Some(Reply::after_bdat("DATA")),
            Some(txn) if txn.recipients.is_empty() => Some(Reply::no_valid_recipients()),
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.reply(reply);
            return Ok(Flow::Continue);
        }
        if let Err(reply) = self.begin_message() {
            self.txn = None;
            self.reply(reply);
            return Ok(Flow::Continue);
        }
        self.reply(Reply::start_data());
        let limit = self.config.message_size_limit;
        let mut reader = DotReader::new(self.config.bare_newline, crlf);
        let mut out = Vec::with_capacity(2 * CHUNK_MAX);
        let mut size: u64 = 0;
        let mut failure: Option<Reply> = None;
        loop {
            let before = out.len();
            let input = self.conn.buffered()?;
            let feed = reader.feed(input, &mut out);
            let used = match feed {
                Feed::More => input.len(),
                Feed::End { consumed } | Feed::BareLf { consumed } => consumed,
            };
            self.conn.consume(used);
            size += (out.len() - before) as u64;
            if matches!(feed, Feed::BareLf { .. }) {
                self.abort_message();
                tracing::info!(client = %self.client, "bare <LF> received in DATA");
                self.txn = None;
                self.conn.reply(&Reply::bare_newline(
                    self.config.bare_newline_reject_code,
                    &self.config.myhostname,
                ));
                return Ok(Flow::Close);
            }
            if failure.is_none() && limit > 0 && size > limit {
                self.abort_message();
                failure = Some(Reply::message_file_too_big());
            }
            if failure.is_none() {
                let whole = if matches!(feed, Feed::End { .. }) {
                    out.len()
                } else {
                    out.len() - out.len() % CHUNK_MAX
                };
                if whole > 0 {
                    if let Err(e) = self.link.content(&out[..whole]) {
                        tracing::warn!(client = %self.client, "{e}");
                        self.handed = false;
                        failure = Some(Reply::queue_write_error());
                    }
                    out.drain(..whole);
                }
            }
            if failure.is_some() {
                out.clear();
            }
            if matches!(feed, Feed::End { .. }) {
                break;
            }
        }
        match failure {
            Some(reply) => {
                self.txn = None;
                self.reply(reply);
            }
            None => self.end_message(size),
        }
        Ok(Flow::Continue)
    }
}
