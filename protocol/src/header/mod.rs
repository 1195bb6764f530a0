//! A message's header section: scanned as it streams through cleanup ([`HeaderScanner`], in
//! `scan`), and read back from a queue file's content for the delivery agents' loop check
//! ([`delivered_to`]).
//!
//! Trusts: nothing. The text is whatever a client sent; it is read as lossy UTF-8, only up to the
//! blank line that ends the header section, and folded fields are unfolded.

mod scan;

pub use scan::{Additions, HeaderScanner};

/// The values of the `Delivered-To:` fields in the header section of `text`, unfolded, trimmed
/// and in lower case, in order. Scanning stops at the first empty line (or the end of `text`).
pub fn delivered_to(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let mut fields = Vec::new();
    let mut current: Option<String> = None;
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = current.as_mut() {
                value.push_str(line);
            }
            continue;
        }
        if let Some(value) = current.take() {
            fields.push(value.trim().to_lowercase());
        }
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim_end().eq_ignore_ascii_case("delivered-to") {
                current = Some(value.to_owned());
            }
        }
    }
    if let Some(value) = current.take() {
        fields.push(value.trim().to_lowercase());
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_the_header_section_only_unfolded_and_in_lower_case() {
        let text =
            b"Received: x\r\nDelivered-To: A@Example.test\r\ndelivered-to :\r\n b@example.test\r\n\
                     Subject: s\r\n\r\nDelivered-To: c@example.test\r\n";
        assert_eq!(delivered_to(text), ["a@example.test", "b@example.test"]);
        assert_eq!(delivered_to(b"Delivered-To: d@x"), ["d@x"]);
        assert!(delivered_to(b"\r\nDelivered-To: e@x\r\n").is_empty());
    }
}
