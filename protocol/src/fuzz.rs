//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test.
//!
//! Each takes arbitrary bytes, never panics on them, and for whatever decodes checks
//! that it comes back unchanged: encode→decode for messages, Display→parse for
//! addresses. A panic here is a bug in this crate, which is what a fuzzer looks for.

use crate::address::{parse_path, Host, Mailbox};
use crate::codec::{decode, encode, Message};
use crate::control::{FromMaster, ToMaster};

fn message_round_trip<M: Message + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(msg) = decode::<M>(data) else {
        return;
    };
    let bytes = match encode(&msg) {
        Ok(bytes) => bytes,
        Err(e) => panic!("decoded {msg:?} does not encode: {e}"),
    };
    match decode::<M>(&bytes) {
        Ok(again) => assert_eq!(again, msg, "encode→decode changed the message"),
        Err(e) => panic!("re-encoded {msg:?} does not decode: {e}"),
    }
}

/// Tries `parse` with and without SMTPUTF8: what parses without it must parse the
/// same with it, be ASCII, and each result must survive Display→parse.
fn address_round_trip<T: PartialEq + std::fmt::Debug + std::fmt::Display>(
    data: &[u8],
    parse: impl Fn(&str, bool) -> Result<T, crate::address::AddressError>,
    is_ascii: impl Fn(&T) -> bool,
) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ascii = parse(text, false).ok();
    let utf8 = parse(text, true).ok();
    if let Some(value) = &ascii {
        assert!(
            is_ascii(value),
            "{value:?} parsed without SMTPUTF8 is not ASCII"
        );
        assert_eq!(utf8.as_ref(), Some(value), "SMTPUTF8 changed the result");
    }
    for (value, flag) in [(ascii, false), (utf8, true)] {
        if let Some(value) = value {
            let shown = value.to_string();
            match parse(&shown, flag) {
                Ok(again) => {
                    assert_eq!(again, value, "Display→parse changed {shown:?}");
                    assert_eq!(again.to_string(), shown, "Display is not stable");
                }
                Err(e) => panic!("{shown:?}, the display of {value:?}, does not parse: {e}"),
            }
        }
    }
}

/// Decodes a `ToMaster` datagram.
pub fn to_master(data: &[u8]) {
    message_round_trip::<ToMaster>(data);
}

/// Decodes a `FromMaster` datagram.
pub fn from_master(data: &[u8]) {
    message_round_trip::<FromMaster>(data);
}

/// Parses `local-part@domain`.
pub fn mailbox(data: &[u8]) {
    address_round_trip(data, Mailbox::parse, Mailbox::is_ascii);
}

/// Parses what may follow an `@`: a domain or an address literal.
pub fn domain(data: &[u8]) {
    address_round_trip(data, Host::parse, Host::is_ascii);
}

/// Parses `<...>` as MAIL FROM and RCPT TO carry it.
pub fn path(data: &[u8]) {
    address_round_trip(data, parse_path, |p| match p {
        crate::address::Path::Mailbox(m) => m.is_ascii(),
        _ => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::PROTOCOL_VERSION;
    use crate::service::ServiceName;

    #[test]
    fn entry_points_accept_valid_and_invalid_input() {
        let hello = encode(&ToMaster::Hello {
            version: PROTOCOL_VERSION,
        })
        .unwrap();
        let connected = encode(&FromMaster::Connected {
            service: ServiceName::try_from("cleanup").unwrap(),
        })
        .unwrap();
        let inputs: [&[u8]; 12] = [
            &hello,
            &connected,
            b"",
            b"\xff\xff\xff\xff\x7f",
            b"user@example.test",
            b"\"a\\\"b\"@EXAMPLE.test",
            "jürgen@bücher.example".as_bytes(),
            b"<@relay.example:user@[IPv6:2001:db8::1]>",
            b"<Postmaster>",
            b"<>",
            b"[192.0.2.1]",
            b"\xc3\x28@x",
        ];
        for data in inputs {
            to_master(data);
            from_master(data);
            mailbox(data);
            domain(data);
            path(data);
        }
    }

    /// Fragments that address parsers treat specially, so that random sequences of them
    /// reach deep into the grammar.
    const ADDRESS_TOKENS: [&str; 22] = [
        "user",
        "@",
        ".",
        "\"",
        "\\",
        "<",
        ">",
        "[",
        "]",
        "IPv6:",
        "::1",
        "192.0.2.1",
        ":",
        ",",
        "example",
        "ü",
        " ",
        "-",
        "Postmaster",
        "\u{3002}",
        "\r\n",
        "a",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48)) {
            to_master(&data);
            from_master(&data);
            mailbox(&data);
            domain(&data);
            path(&data);
        }

        #[test]
        fn address_shaped_text_never_panics(
            tokens in proptest::collection::vec(proptest::sample::select(&ADDRESS_TOKENS[..]), 0..12)
        ) {
            let text = tokens.concat();
            mailbox(text.as_bytes());
            domain(text.as_bytes());
            path(text.as_bytes());
        }
    }

    proptest::proptest! {
        /// Valid paths with one fragment inserted or one character removed: inputs
        /// next to the grammar's edges.
        #[test]
        fn near_valid_paths_never_panic(
            p in crate::testing::path(),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            token in proptest::sample::select(&ADDRESS_TOKENS[..]),
            insert in proptest::prelude::any::<bool>(),
        ) {
            let text = p.to_string();
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let i = boundaries[at.index(boundaries.len())];
            let mut mutated = text.clone();
            if insert {
                mutated.insert_str(i, token);
            } else {
                mutated.remove(i);
            }
            for data in [text.as_bytes(), mutated.as_bytes()] {
                path(data);
                if let Some(inner) = data.strip_prefix(b"<").and_then(|d| d.strip_suffix(b">")) {
                    mailbox(inner);
                    if let Some(at) = inner.iter().rposition(|&b| b == b'@') {
                        domain(&inner[at + 1..]);
                    }
                }
            }
        }
    }

    #[test]
    fn the_round_trip_check_can_fail() {
        // A parser whose display is not re-parseable must trip the check.
        let broken = std::panic::catch_unwind(|| {
            address_round_trip(
                b"x",
                |s, _| Ok::<_, crate::address::AddressError>(format!("{s}!")),
                |_| true,
            )
        });
        assert!(broken.is_err());
    }
}
