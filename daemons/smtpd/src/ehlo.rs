//! HELO and EHLO (RFC 5321 section 4.1.1.1): who the client says it is, and the
//! extensions offered.
//!
//! Trusts: the name, which `Command::parse` validated as a domain or address literal;
//! it is recorded for the Received: header, never checked against DNS (smtpd cannot
//! resolve). Postfix's rules: HELO or EHLO inside a mail transaction is refused with
//! `503 5.5.1 Error: MAIL transaction in progress`; otherwise it may be repeated.
//! EHLO offers, in Postfix's order, PIPELINING, SIZE (with `message_size_limit`, bare
//! when there is no limit), VRFY (unless `disable_vrfy_command`),
//! ENHANCEDSTATUSCODES, 8BITMIME, DSN, SMTPUTF8 (when `smtputf8_enable`) and CHUNKING.
//! ETRN, STARTTLS and AUTH are not offered.

use protocol::address::Host;
use protocol::Reply;

use crate::session::Session;

impl Session<'_, '_> {
    pub(crate) fn helo(&mut self, host: Host, esmtp: bool) {
        if self.txn.is_some() {
            self.reply(Reply::transaction_in_progress());
            return;
        }
        self.helo = Some(host);
        self.esmtp = esmtp;
        if !esmtp {
            self.reply(Reply::helo(&self.config.myhostname));
            return;
        }
        let size = match self.config.message_size_limit {
            0 => "SIZE".to_owned(),
            limit => format!("SIZE {limit}"),
        };
        let mut keywords = vec!["PIPELINING", size.as_str()];
        if !self.config.disable_vrfy {
            keywords.push("VRFY");
        }
        keywords.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]);
        if self.config.smtputf8 {
            keywords.push("SMTPUTF8");
        }
        keywords.push("CHUNKING");
        self.reply(Reply::ehlo(&self.config.myhostname, &keywords));
    }
}
