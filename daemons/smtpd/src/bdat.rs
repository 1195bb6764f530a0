//! BDAT (RFC 3030 CHUNKING): `BDAT n [LAST]`, followed by exactly `n` octets of text,
//! not dot-stuffed.
//!
//! Trusts: nothing in the chunk; it is read in pieces of the input buffer and streamed
//! to cleanup, so a chunk of any declared size takes bounded memory. A refused chunk is
//! still read to its end (its octets are not commands), then refused.
//!
//! Rules (Postfix's, RFC 3030's): without MAIL, `503 5.5.1 Error: need RCPT command`;
//! without accepted recipients, `554 5.5.1 Error: no valid recipients`; the first chunk
//! opens the message at cleanup (`451 4.3.0` when it cannot); a chunk that would take
//! the message past `message_size_limit` is `552 5.3.4 Chunk exceeds message size
//! limit`, and cleanup is told to `Abort`. After a failed chunk, every further chunk of
//! the transaction is read, dropped and given the same reply, until `BDAT LAST` (which
//! ends the transaction) or RSET. Each accepted chunk but the last gets
//! `250 2.0.0 Ok: n bytes`; the last gets cleanup's answer. Bare LFs are stored as CRLF
//! under `smtpd_forbid_bare_newline = normalize` (and `no`); under `reject` a bare LF
//! ends the session as in DATA. MAIL, RCPT and DATA inside a BDAT transaction are
//! refused (`503 5.5.1 Error: MAIL after BDAT`, ...).

use protocol::cleanup::CHUNK_MAX;
use protocol::Reply;

use crate::config::BareNewline;
use crate::conn::ConnError;
use crate::session::{Bdat, Flow, Session};
use protocol::smtp::data::{has_bare_lf, normalize_bare_lf};

impl Session<'_, '_> {
    /// Refuses this chunk after reading it; `LAST` ends the transaction.
    fn refuse_chunk(&mut self, size: u64, last: bool, reply: Reply) -> Result<Flow, ConnError> {
        self.conn.skip(size)?;
        if let Some(bdat) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
            bdat.error = Some(reply.clone());
            if last {
                self.abort_message();
                self.txn = None;
            }
        }
        self.reply(reply);
        Ok(Flow::Continue)
    }

    pub(crate) fn bdat(&mut self, size: u64, last: bool) -> Result<Flow, ConnError> {
        let refusal = match &self.txn {
            None => Some(Reply::need_rcpt()),
            Some(txn) if txn.recipients.is_empty() => Some(Reply::no_valid_recipients()),
            Some(txn) => txn.bdat.as_ref().and_then(|b| b.error.clone()),
        };
        if let Some(reply) = refusal {
            return self.refuse_chunk(size, last, reply);
        }
        if self.txn.as_ref().is_some_and(|t| t.bdat.is_none()) {
            let begun = self.begin_message();
            if let Some(txn) = self.txn.as_mut() {
                txn.bdat = Some(Bdat::default());
            }
            if let Err(reply) = begun {
                return self.refuse_chunk(size, last, reply);
            }
        }
        let (so_far, mut last_cr) = match self.txn.as_ref().and_then(|t| t.bdat.as_ref()) {
            Some(b) => (b.size, b.last_cr),
            None => (0, false),
        };
        let limit = self.config.message_size_limit;
        if limit > 0 && so_far.saturating_add(size) > limit {
            self.abort_message();
            return self.refuse_chunk(size, last, Reply::chunk_too_big());
        }
        let reject = self.config.bare_newline == BareNewline::Reject;
        let mut out = Vec::with_capacity(2 * CHUNK_MAX);
        let mut stored: u64 = 0;
        let mut failure: Option<Reply> = None;
        let mut left = size;
        while left > 0 {
            let input = self.conn.buffered()?;
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
            let piece = &input[..take];
            if reject && has_bare_lf(piece, last_cr) {
                self.abort_message();
                self.txn = None;
                tracing::info!(client = %self.client, "bare <LF> received in BDAT");
                self.conn.reply(&Reply::bare_newline(
                    self.config.bare_newline_reject_code,
                    &self.config.myhostname,
                ));
                return Ok(Flow::Close);
            }
            let before = out.len();
            normalize_bare_lf(piece, &mut last_cr, &mut out);
            stored += (out.len() - before) as u64;
            self.conn.consume(take);
            left -= take as u64;
            if failure.is_none() && limit > 0 && so_far + stored > limit {
                self.abort_message();
                failure = Some(Reply::message_file_too_big());
            }
            if failure.is_none() && (out.len() >= CHUNK_MAX || left == 0) {
                if let Err(e) = self.link.content(&out) {
                    tracing::warn!(client = %self.client, "{e}");
                    self.handed = false;
                    failure = Some(Reply::queue_write_error());
                }
                out.clear();
            }
            if failure.is_some() {
                out.clear();
            }
        }
        if let Some(bdat) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
            bdat.size = so_far + stored;
            bdat.last_cr = last_cr;
        }
        if let Some(reply) = failure {
            if let Some(bdat) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
                bdat.error = Some(reply.clone());
            }
            if last {
                self.txn = None;
            }
            self.reply(reply);
        } else if last {
            self.end_message(so_far + stored);
        } else {
            self.reply(Reply::chunk_ok(size));
        }
        Ok(Flow::Continue)
    }
}
