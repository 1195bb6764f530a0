//! ESMTP parameters of MAIL and RCPT: `SIZE` (RFC 1870), `BODY` (RFC 6152, RFC 3030),
//! `SMTPUTF8` (RFC 6531), `RET`, `ENVID`, `NOTIFY`, `ORCPT` (RFC 3461, with the
//! `utf-8` address type of RFC 6533), and `AUTH` (RFC 4954, accepted and ignored).
//!
//! Trusts: nothing; every value is what a client typed. The value types here
//! (`Envid`, `Notify`, `OriginalRecipient`) keep their decoded form and have
//! validating constructors, because they travel on to cleanup and into the queue
//! file for the bounces of later deliveries, where they are read back as gossip.
//!
//! Decisions where the RFCs leave room:
//! - xtext `+XX` escapes are accepted with lower-case hex digits as well (RFC 3461
//!   asks for upper case); `Display` always writes the canonical upper-case form.
//! - The length limits of RFC 3461 (ENVID 100, ORCPT 500 characters) are applied to
//!   the decoded value, so that the canonical form written back always re-parses.
//! - An ORCPT of type `utf-8` is accepted in any of the three RFC 6533 forms
//!   (`\x{HEX}` escapes, raw UTF-8, a plain mailbox); its address is not required to
//!   be a valid mailbox, as Postfix does not require it either (the bounce daemon
//!   only quotes it back).

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize, Serializer};

use crate::codec::deserialize_validated;

/// RFC 3461 section 4.4: an ENVID is at most 100 characters.
pub const MAX_ENVID_LEN: usize = 100;

/// RFC 3461 section 4.2: an ORCPT is at most 500 characters.
pub const MAX_ORCPT_LEN: usize = 500;

/// Longest ORCPT address type kept: registered types are short (`rfc822`,
/// `utf-8`, `x400`); anything longer is not a type any peer uses.
pub const MAX_ADDR_TYPE_LEN: usize = 32;

/// Why a parameter value cannot be one of the value types of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("ENVID is empty")]
    EmptyEnvid,
    #[error("ENVID is {len} octets decoded, more than {MAX_ENVID_LEN}")]
    EnvidTooLong { len: usize },
    #[error("ENVID has a character that is not printable ASCII at octet {offset}")]
    EnvidChar { offset: usize },
    #[error("ORCPT has no address type before its ';'")]
    MissingAddrType,
    #[error("ORCPT address type is {len} octets, more than {MAX_ADDR_TYPE_LEN}")]
    AddrTypeTooLong { len: usize },
    #[error("ORCPT address type has a character that is not allowed in an atom at octet {offset}")]
    AddrTypeChar { offset: usize },
    #[error("ORCPT address is empty")]
    EmptyOrcpt,
    #[error("ORCPT address is {len} octets decoded, more than {MAX_ORCPT_LEN}")]
    OrcptTooLong { len: usize },
    #[error("ORCPT address has a control character at octet {offset}")]
    OrcptControl { offset: usize },
    #[error("xtext has a malformed +XX escape at octet {offset}")]
    BadXtextEscape { offset: usize },
    #[error("xtext has a character outside '!'..'~' or a bare '=' at octet {offset}")]
    XtextChar { offset: usize },
    #[error("decoded xtext is not UTF-8")]
    XtextNotUtf8,
    #[error("utf-8 address has a malformed \\x{{HEX}} escape at octet {offset}")]
    BadUnicodeEscape { offset: usize },
    #[error("NOTIFY list is empty or has an empty item")]
    EmptyNotify,
    #[error("NOTIFY has an unknown keyword")]
    UnknownNotify,
    #[error("NOTIFY names a keyword twice")]
    DuplicateNotify,
    #[error("NOTIFY=NEVER is combined with another keyword")]
    NeverWithOthers,
}

/// `BODY=`: the content's encoding as the client declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
    BinaryMime,
}

impl BodyType {
    /// Parses the value, case-insensitively.
    pub fn parse(s: &str) -> Option<BodyType> {
        [
            BodyType::SevenBit,
            BodyType::EightBitMime,
            BodyType::BinaryMime,
        ]
        .into_iter()
        .find(|b| b.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            BodyType::SevenBit => "7BIT",
            BodyType::EightBitMime => "8BITMIME",
            BodyType::BinaryMime => "BINARYMIME",
        }
    }
}

/// `RET=`: what a DSN for a failed recipient returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    /// Parses the value, case-insensitively.
    pub fn parse(s: &str) -> Option<Ret> {
        [Ret::Full, Ret::Hdrs]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// `ENVID=`: the client's envelope identifier, decoded from xtext: 1 to
/// [`MAX_ENVID_LEN`] octets of printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Envid(String);

impl Envid {
    pub fn new(decoded: &str) -> Result<Envid, ParamError> {
        if decoded.is_empty() {
            return Err(ParamError::EmptyEnvid);
        }
        if decoded.len() > MAX_ENVID_LEN {
            return Err(ParamError::EnvidTooLong { len: decoded.len() });
        }
        if let Some(offset) = decoded.bytes().position(|b| !(b' '..=b'~').contains(&b)) {
            return Err(ParamError::EnvidChar { offset });
        }
        Ok(Envid(decoded.to_owned()))
    }

    /// Decodes the xtext form of the parameter value.
    pub fn from_xtext(value: &str) -> Result<Envid, ParamError> {
        let bytes = xtext_decode(value)?;
        let text = String::from_utf8(bytes).map_err(|_| ParamError::XtextNotUtf8)?;
        Envid::new(&text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Envid {
    /// The xtext form, as it goes on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        xtext_encode(self.0.as_bytes(), f)
    }
}

impl Serialize for Envid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

deserialize_validated!(Envid, String, |s| Envid::new(&s));

/// `NOTIFY=`: when the sender wants a DSN for a recipient. No condition set is
/// `NEVER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// Parses `NEVER` or a comma-separated list of `SUCCESS`, `FAILURE`, `DELAY`,
    /// each at most once, case-insensitively.
    pub fn parse(s: &str) -> Result<Notify, ParamError> {
        if s.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::NEVER);
        }
        let mut notify = Notify::NEVER;
        for item in s.split(',') {
            if item.is_empty() {
                return Err(ParamError::EmptyNotify);
            }
            let flag = if item.eq_ignore_ascii_case("SUCCESS") {
                &mut notify.success
            } else if item.eq_ignore_ascii_case("FAILURE") {
                &mut notify.failure
            } else if item.eq_ignore_ascii_case("DELAY") {
                &mut notify.delay
            } else if item.eq_ignore_ascii_case("NEVER") {
                return Err(ParamError::NeverWithOthers);
            } else {
                return Err(ParamError::UnknownNotify);
            };
            if *flag {
                return Err(ParamError::DuplicateNotify);
            }
            *flag = true;
        }
        Ok(notify)
    }

    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }
}

impl fmt::Display for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let names = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(set, _)| *set) {
            if !first {
                f.write_char(',')?;
            }
            f.write_str(name)?;
            first = false;
        }
        Ok(())
    }
}

/// `ORCPT=`: the original recipient as the first MTA received it, decoded: an
/// address type (an atom, kept in lower case) and the address text (UTF-8, no
/// control characters, at most [`MAX_ORCPT_LEN`] octets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginalRecipient {
    addr_type: String,
    address: String,
}

#[derive(Deserialize)]
struct OriginalRecipientWire {
    addr_type: String,
    address: String,
}

impl OriginalRecipient {
    /// The address type of RFC 6533, whose value is not xtext.
    pub const UTF8_TYPE: &'static str = "utf-8";
    /// The address type of RFC 3461 for Internet mail.
    pub const RFC822_TYPE: &'static str = "rfc822";

    pub fn new(addr_type: &str, address: &str) -> Result<OriginalRecipient, ParamError> {
        if addr_type.is_empty() {
            return Err(ParamError::MissingAddrType);
        }
        if addr_type.len() > MAX_ADDR_TYPE_LEN {
            return Err(ParamError::AddrTypeTooLong {
                len: addr_type.len(),
            });
        }
        if let Some(offset) = addr_type.bytes().position(|b| !is_atext(b)) {
            return Err(ParamError::AddrTypeChar { offset });
        }
        if address.is_empty() {
            return Err(ParamError::EmptyOrcpt);
        }
        if address.len() > MAX_ORCPT_LEN {
            return Err(ParamError::OrcptTooLong { len: address.len() });
        }
        if let Some((offset, _)) = address.char_indices().find(|(_, ch)| ch.is_control()) {
            return Err(ParamError::OrcptControl { offset });
        }
        Ok(OriginalRecipient {
            addr_type: addr_type.to_ascii_lowercase(),
            address: address.to_owned(),
        })
    }

    /// Parses the parameter value `addr-type;encoded-address`.
    pub fn parse(value: &str) -> Result<OriginalRecipient, ParamError> {
        let (addr_type, encoded) = value.split_once(';').ok_or(ParamError::MissingAddrType)?;
        let address = if addr_type.eq_ignore_ascii_case(Self::UTF8_TYPE) {
            unicode_escape_decode(encoded)?
        } else {
            String::from_utf8(xtext_decode(encoded)?).map_err(|_| ParamError::XtextNotUtf8)?
        };
        OriginalRecipient::new(addr_type, &address)
    }

    /// The address type, in lower case.
    pub fn addr_type(&self) -> &str {
        &self.addr_type
    }

    /// The address, decoded.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for OriginalRecipient {
    /// The parameter value as it goes on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};", self.addr_type)?;
        if self.addr_type == Self::UTF8_TYPE {
            unicode_escape_encode(&self.address, f)
        } else {
            xtext_encode(self.address.as_bytes(), f)
        }
    }
}

impl Serialize for OriginalRecipient {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("OriginalRecipient", 2)?;
        st.serialize_field("addr_type", &self.addr_type)?;
        st.serialize_field("address", &self.address)?;
        st.end()
    }
}

deserialize_validated!(OriginalRecipient, OriginalRecipientWire, |w| {
    OriginalRecipient::new(&w.addr_type, &w.address)
});

/// RFC 5322 `atext`: what an atom (the ORCPT address type) is made of.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 3461 `xchar`: printable ASCII except `+` and `=`, written as is.
fn is_xchar(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'+' && b != b'='
}

/// Decodes RFC 3461 xtext: `xchar`s as themselves, `+XX` as the octet XX.
pub fn xtext_decode(s: &str) -> Result<Vec<u8>, ParamError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .ok_or(ParamError::BadXtextEscape { offset: i })?;
            let octet = u8::from_str_radix(hex, 16)
                .map_err(|_| ParamError::BadXtextEscape { offset: i })?;
            out.push(octet);
            i += 3;
        } else if is_xchar(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(ParamError::XtextChar { offset: i });
        }
    }
    Ok(out)
}

/// Writes octets as canonical xtext (upper-case escapes, only where required).
pub fn xtext_encode(bytes: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    for &b in bytes {
        if is_xchar(b) {
            f.write_char(char::from(b))?;
        } else {
            write!(f, "+{b:02X}")?;
        }
    }
    Ok(())
}

/// Decodes the RFC 6533 forms: `\x{HEX}` escapes for any character, everything
/// else (printable ASCII, UTF-8) as itself.
fn unicode_escape_decode(s: &str) -> Result<String, ParamError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let offset = s.len() - rest.len() + at;
        let bad = ParamError::BadUnicodeEscape { offset };
        let escape = rest[at..].strip_prefix("\\x{").ok_or(bad.clone())?;
        let close = escape.find('}').ok_or(bad.clone())?;
        let hex = &escape[..close];
        if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad);
        }
        let ch = u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or(bad)?;
        out.push(ch);
        rest = &escape[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Writes the RFC 6533 `utf-8-addr-unitext` form: printable ASCII other than
/// `+`, `=`, `\` and non-ASCII as themselves, the rest as `\x{HEX}`.
fn unicode_escape_encode(s: &str, f: &mut impl fmt::Write) -> fmt::Result {
    for ch in s.chars() {
        let plain = if ch.is_ascii() {
            u8::try_from(ch).is_ok_and(|b| is_xchar(b) && b != b'\\')
        } else {
            !ch.is_control()
        };
        if plain {
            f.write_char(ch)?;
        } else {
            write!(f, "\\x{{{:X}}}", u32::from(ch))?;
        }
    }
    Ok(())
}

/// The parameters of a MAIL command this server understands. `AUTH=` is accepted
/// and not kept: Postern offers no AUTH, so its value means nothing here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<Envid>,
}

impl fmt::Display for MailParams {
    /// Each parameter preceded by a space, in a fixed order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(size) = self.size {
            write!(f, " SIZE={size}")?;
        }
        if let Some(body) = self.body {
            write!(f, " BODY={}", body.as_str())?;
        }
        if self.smtputf8 {
            f.write_str(" SMTPUTF8")?;
        }
        if let Some(ret) = self.ret {
            write!(f, " RET={}", ret.as_str())?;
        }
        if let Some(envid) = &self.envid {
            write!(f, " ENVID={envid}")?;
        }
        Ok(())
    }
}

/// The parameters of a RCPT command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<OriginalRecipient>,
}

impl fmt::Display for RcptParams {
    /// Each parameter preceded by a space, in a fixed order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(notify) = self.notify {
            write!(f, " NOTIFY={notify}")?;
        }
        if let Some(orcpt) = &self.orcpt {
            write!(f, " ORCPT={orcpt}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn xtext_decodes_escapes_and_refuses_bad_ones() {
        assert_eq!(xtext_decode("a+2Bb+3d").unwrap(), b"a+b=");
        assert_eq!(xtext_decode("").unwrap(), b"");
        for (s, offset) in [("a+2", 1), ("+G0", 0), ("ab+", 2), ("+é0", 0)] {
            assert_eq!(
                xtext_decode(s),
                Err(ParamError::BadXtextEscape { offset }),
                "{s}"
            );
        }
        for (s, offset) in [("a=b", 1), ("a b", 1), ("é", 0), ("\x7f", 0)] {
            assert_eq!(
                xtext_decode(s),
                Err(ParamError::XtextChar { offset }),
                "{s}"
            );
        }
    }

    #[test]
    fn xtext_encodes_canonically() {
        let mut s = String::new();
        xtext_encode("a+b= c\u{e9}".as_bytes(), &mut s).unwrap();
        assert_eq!(s, "a+2Bb+3D+20c+C3+A9");
    }

    #[test]
    fn envid_is_printable_and_bounded() {
        assert_eq!(Envid::from_xtext("QQ314159").unwrap().as_str(), "QQ314159");
        assert_eq!(Envid::from_xtext("a+20b").unwrap().as_str(), "a b");
        assert_eq!(Envid::from_xtext(""), Err(ParamError::EmptyEnvid));
        assert_eq!(
            Envid::from_xtext("a+0Ab"),
            Err(ParamError::EnvidChar { offset: 1 })
        );
        assert_eq!(
            Envid::from_xtext("+C3+A9"),
            Err(ParamError::EnvidChar { offset: 0 })
        );
        assert_eq!(Envid::from_xtext("+FF"), Err(ParamError::XtextNotUtf8));
        assert!(Envid::new(&"e".repeat(MAX_ENVID_LEN)).is_ok());
        assert_eq!(
            Envid::new(&"e".repeat(MAX_ENVID_LEN + 1)),
            Err(ParamError::EnvidTooLong { len: 101 })
        );
        assert_eq!(Envid::new("a+b").unwrap().to_string(), "a+2Bb");
    }

    #[test]
    fn notify_lists() {
        assert_eq!(Notify::parse("never"), Ok(Notify::NEVER));
        let all = Notify::parse("SUCCESS,failure,Delay").unwrap();
        assert!(all.success && all.failure && all.delay);
        assert_eq!(all.to_string(), "SUCCESS,FAILURE,DELAY");
        assert_eq!(
            Notify::parse("DELAY").unwrap(),
            Notify {
                delay: true,
                ..Notify::NEVER
            }
        );
        assert_eq!(Notify::parse(""), Err(ParamError::EmptyNotify));
        assert_eq!(Notify::parse("SUCCESS,"), Err(ParamError::EmptyNotify));
        assert_eq!(
            Notify::parse("SUCCESS,SUCCESS"),
            Err(ParamError::DuplicateNotify)
        );
        assert_eq!(
            Notify::parse("SUCCESS,NEVER"),
            Err(ParamError::NeverWithOthers)
        );
        assert_eq!(Notify::parse("SOMETIMES"), Err(ParamError::UnknownNotify));
        assert_eq!(
            Notify::parse("SUCCESS FAILURE"),
            Err(ParamError::UnknownNotify)
        );
    }

    #[test]
    fn orcpt_forms() {
        let o = OriginalRecipient::parse("RFC822;user+2Btag@example.test").unwrap();
        assert_eq!(o.addr_type(), "rfc822");
        assert_eq!(o.address(), "user+tag@example.test");
        assert_eq!(o.to_string(), "rfc822;user+2Btag@example.test");

        let o = OriginalRecipient::parse("utf-8;j\\x{FC}rgen@b\\x{FC}cher.example").unwrap();
        assert_eq!(o.address(), "jürgen@bücher.example");
        let raw = OriginalRecipient::parse("UTF-8;jürgen@bücher.example").unwrap();
        assert_eq!(raw, o);
        assert_eq!(o.to_string(), "utf-8;jürgen@bücher.example");
        let plus = OriginalRecipient::parse("utf-8;a+b\\x{3D}c@x").unwrap();
        assert_eq!(plus.address(), "a+b=c@x");
        assert_eq!(plus.to_string(), "utf-8;a\\x{2B}b\\x{3D}c@x");

        assert_eq!(
            OriginalRecipient::parse("user@example.test"),
            Err(ParamError::MissingAddrType)
        );
        assert_eq!(
            OriginalRecipient::parse(";a@b"),
            Err(ParamError::MissingAddrType)
        );
        assert_eq!(
            OriginalRecipient::parse("rfc822;"),
            Err(ParamError::EmptyOrcpt)
        );
        assert_eq!(
            OriginalRecipient::parse("rf c822;a@b"),
            Err(ParamError::AddrTypeChar { offset: 2 })
        );
        assert_eq!(
            OriginalRecipient::parse("rfc822;a+0Ab"),
            Err(ParamError::OrcptControl { offset: 1 })
        );
        assert_eq!(
            OriginalRecipient::parse("utf-8;a\\x{0}"),
            Err(ParamError::OrcptControl { offset: 1 })
        );
        for bad in [
            "utf-8;a\\b",
            "utf-8;a\\x{}",
            "utf-8;a\\x{D800}",
            "utf-8;\\x{1234567}",
            "utf-8;\\x{12",
        ] {
            assert!(
                matches!(
                    OriginalRecipient::parse(bad),
                    Err(ParamError::BadUnicodeEscape { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("rfc822;{}", "a".repeat(MAX_ORCPT_LEN + 1));
        assert_eq!(
            OriginalRecipient::parse(&long),
            Err(ParamError::OrcptTooLong { len: 501 })
        );
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(BodyType::parse("8bitmime"), Some(BodyType::EightBitMime));
        assert_eq!(BodyType::parse("BinaryMIME"), Some(BodyType::BinaryMime));
        assert_eq!(BodyType::parse("8BIT"), None);
        assert_eq!(Ret::parse("hdrs"), Some(Ret::Hdrs));
        assert_eq!(Ret::parse("NONE"), None);
    }

    proptest! {
        #[test]
        fn xtext_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut s = String::new();
            xtext_encode(&bytes, &mut s).unwrap();
            prop_assert_eq!(xtext_decode(&s).unwrap(), bytes);
        }

        #[test]
        fn orcpt_round_trips(addr_type in "(rfc822|utf-8|x400|[a-z0-9]{1,8})", address in "[^\\p{Cc}]{1,40}") {
            let o = OriginalRecipient::new(&addr_type, &address).unwrap();
            prop_assert_eq!(OriginalRecipient::parse(&o.to_string()).unwrap(), o.clone());
            let bytes = postcard::to_allocvec(&o).unwrap();
            prop_assert_eq!(postcard::from_bytes::<OriginalRecipient>(&bytes).unwrap(), o);
        }
    }
}
