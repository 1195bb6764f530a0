//! MAIL (RFC 5321 section 4.1.1.2) with SIZE, BODY, SMTPUTF8, RET and ENVID.
//!
//! Trusts: the path and parameters, which `Command::parse` validated (a non-ASCII
//! sender without `SMTPUTF8` is refused there with Postfix's
//! `553 5.6.7 Must declare SMTPUTF8 to send unicode address`). Checked here, in
//! Postfix's order: HELO first when `smtpd_helo_required`; no MAIL inside a
//! transaction (`503 5.5.1 Error: nested MAIL command`, or `MAIL after BDAT`);
//! `SMTPUTF8` only when offered (`555 5.5.4 Unsupported option: SMTPUTF8`);
//! `BODY=BINARYMIME` is not offered (no BINARYMIME keyword), so it is a bad BODY value;
//! a declared SIZE over `message_size_limit` is
//! `552 5.3.4 Message size exceeds fixed limit`. The sender is not checked further.

use protocol::address::ReversePath;
use protocol::queue::MailFlags;
use protocol::smtp::{BodyType, CommandError, MailParams, Param};
use protocol::Reply;

use crate::session::{Session, Transaction};

impl Session<'_, '_> {
    pub(crate) fn mail(&mut self, from: ReversePath, params: MailParams) {
        if self.config.helo_required && self.helo.is_none() {
            return self.reply(Reply::send_helo_first());
        }
        if let Some(txn) = &self.txn {
            let reply = if txn.bdat.is_some() {
                Reply::after_bdat("MAIL")
            } else {
                Reply::nested_mail()
            };
            return self.reply(reply);
        }
        if params.smtputf8 && !self.config.smtputf8 {
            return self.reply(
                CommandError::UnsupportedParameter {
                    param: "SMTPUTF8".to_owned(),
                }
                .reply(),
            );
        }
        if params.body == Some(BodyType::BinaryMime) {
            return self.reply(CommandError::BadParameter { param: Param::Body }.reply());
        }
        let limit = self.config.message_size_limit;
        if limit > 0 && params.size.is_some_and(|size| size > limit) {
            return self.reply(Reply::message_too_big());
        }
        self.txn = Some(Transaction {
            sender: from,
            flags: MailFlags {
                smtputf8: params.smtputf8,
                body: params.body,
                ret: params.ret,
                envid: params.envid,
            },
            recipients: Vec::new(),
            bdat: None,
        });
        self.reply(Reply::sender_ok());
    }
}
