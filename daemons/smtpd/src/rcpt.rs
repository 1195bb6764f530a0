//! RCPT (RFC 5321 section 4.1.1.3) with NOTIFY and ORCPT (RFC 3461).
//!
//! Trusts: the path and parameters, validated by `Command::parse`, and the client
//! address the kernel reported. Checked here, in Postfix's order: a transaction
//! (`503 5.5.1 Error: need MAIL command`), not during BDAT (`RCPT after BDAT`),
//! `smtpd_recipient_limit` (`452 4.5.3 Error: too many recipients`), SMTPUTF8 for a
//! non-ASCII address (`553 5.6.7`), then relay control with `policy::relay::classify`
//! (`554 5.7.1 <addr>: Relay access denied`).
//!
//! `<Postmaster>` without a domain is `postmaster@$myhostname`, which is always local.
//! A recipient of `virtual_mailbox_domains` must have a mailbox in `virtual_mailbox_maps`
//! (looked up as the virtual agent does: the address, then `@domain`), else
//! `550 5.1.1 <addr>: Recipient address rejected: User unknown in virtual mailbox table`,
//! so Postern does not accept mail it would bounce; an empty `virtual_mailbox_maps`
//! disables the check, as in Postfix. A recipient of `mydestination` must be in
//! `local_recipient_maps` (`local_recipients` says how it is read and looked up), else
//! `550 5.1.1 <addr>: Recipient address rejected: User unknown in local recipient table`;
//! if a table of it could not be read, or the account lookup through proxymap failed,
//! `451 4.3.0 <addr>: Temporary lookup failure`.

use policy::RecipientClass;
use protocol::address::ForwardPath;
use protocol::queue::Recipient;
use protocol::smtp::RcptParams;
use protocol::Reply;

use crate::local_recipients::Lookup;
use crate::session::Session;

/// Postfix's reply for a recipient its table does not list.
fn user_unknown(mailbox: &protocol::address::Mailbox, table: &str) -> Reply {
    let text = format!("<{mailbox}>: Recipient address rejected: User unknown in {table}");
    // A validated mailbox has no control characters and at most 256 octets, so the
    // reply is valid; the fallback keeps the code and status without the address.
    Reply::new(550, Some((5, 1, 1)), vec![text]).unwrap_or_else(|_| {
        Reply::new(
            550,
            Some((5, 1, 1)),
            vec![format!(
                "Recipient address rejected: User unknown in {table}"
            )],
        )
        .expect("a literal reply is valid")
    })
}

/// Postfix's reply when a recipient table could not be consulted.
fn lookup_failure(mailbox: &protocol::address::Mailbox) -> Reply {
    Reply::new(
        451,
        Some((4, 3, 0)),
        vec![format!("<{mailbox}>: Temporary lookup failure")],
    )
    .unwrap_or_else(|_| {
        Reply::new(
            451,
            Some((4, 3, 0)),
            vec!["Temporary lookup failure".into()],
        )
        .expect("a literal reply is valid")
    })
}

impl Session<'_, '_> {
    pub(crate) fn rcpt(&mut self, to: ForwardPath, params: RcptParams) {
        let Some(txn) = &self.txn else {
            return self.reply(Reply::need_mail());
        };
        if txn.bdat.is_some() {
            return self.reply(Reply::after_bdat("RCPT"));
        }
        if txn.recipients.len() >= self.config.recipient_limit {
            return self.reply(Reply::too_many_recipients());
        }
        if let Some(mailbox) = to.mailbox() {
            if !mailbox.is_ascii() && !txn.flags.smtputf8 {
                return self.reply(Reply::smtputf8_required());
            }
            let class = policy::classify(mailbox, self.client_ip, &self.config.tables);
            if class == RecipientClass::RelayDenied {
                return self.reply(Reply::relay_denied(&mailbox.to_string()));
            }
            if class == RecipientClass::Virtual
                && !self.config.virtual_mailbox_maps.is_empty()
                && self
                    .config
                    .virtual_mailbox_maps
                    .find_address(mailbox, "")
                    .is_none()
            {
                return self.reply(user_unknown(mailbox, "virtual mailbox table"));
            }
            if class == RecipientClass::Local {
                match self
                    .config
                    .local_recipients
                    .lookup(mailbox, &mut *self.accounts)
                {
                    Lookup::Known => {}
                    Lookup::Unknown => {
                        return self.reply(user_unknown(mailbox, "local recipient table"))
                    }
                    Lookup::Unavailable => return self.reply(lookup_failure(mailbox)),
                }
            }
        }
        if let Some(txn) = &mut self.txn {
            txn.recipients.push(Recipient {
                path: to,
                notify: params.notify,
                orcpt: params.orcpt,
            });
        }
        self.reply(Reply::recipient_ok());
    }
}
