//! The commands without a transaction of their own: RSET, VRFY and HELP (NOOP and
//! QUIT are one line each in the session's dispatch).
//!
//! Trusts: nothing; the VRFY argument is quoted back only through `printable`. VRFY
//! does not look the address up (`252 2.0.0 <argument>`: "cannot verify, but will
//! accept"), or is refused with `502 5.5.1 VRFY command is disabled` under
//! `disable_vrfy_command = yes`. HELP, which Postfix does not offer, lists the
//! commands this server knows.

use protocol::Reply;

use crate::session::Session;

impl Session<'_, '_> {
    /// Ends any transaction, BDAT included (cleanup discards the message).
    pub(crate) fn rset(&mut self) {
        self.abort_message();
        self.txn = None;
        self.reply(Reply::ok());
    }

    pub(crate) fn vrfy(&mut self, arg: &str) {
        if self.config.disable_vrfy {
            return self.reply(Reply::vrfy_disabled());
        }
        self.reply(Reply::vrfy_unverified(arg));
    }

    pub(crate) fn help(&mut self) {
        self.reply(Reply::help(&[
            "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "HELP", "QUIT",
        ]));
    }
}
