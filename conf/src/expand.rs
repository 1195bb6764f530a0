//! `$name` expansion in parameter values, as Postfix does it.
//!
//! Forms: `$name`, `${name}`, `$(name)`, `$$` (a literal `$`), `${name?text}` (`text` when
//! `$name` is non-empty, else nothing) and `${name:text}` (`text` when `$name` is empty,
//! else nothing), also with parentheses; `text` may itself contain expansions and
//! balanced braces. Names are ASCII letters, digits and `_`.
//!
//! One deliberate difference: the conditional forms test the *expanded* value of `name`
//! (Postfix tests its raw text), so `${relayhost?...}` behaves the same whether
//! `relayhost` is written out or comes from another parameter that is empty.
//!
//! Trusts: nothing in the text. Parsing and expansion are bounded: nesting of parameters
//! and `${...}` forms together by `MAX_NESTING` (no stack exhaustion), the size of any one
//! expanded value by `MAX_EXPANDED_BYTES` (no exponential blow-up from `a = $b$b`,
//! `b = $c$c`, ...), and every parameter is expanded at most once per expander (memo), so
//! the work stays linear in the output. A cycle is an error naming the whole chain.

use std::collections::HashMap;

use crate::error::Problem;

/// How deep parameters may refer to parameters and `${...}` forms may nest, together.
/// Postfix stops at 100 levels too; a real configuration uses a handful.
pub const MAX_NESTING: usize = 100;

/// The largest expanded value. Real values are at most a few KiB (a long `mynetworks`);
/// the bound stops a few self-doubling references from producing gigabytes.
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// A parsed value: literal text and references, with byte offsets into the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    /// `$$`.
    Dollar,
    Ref {
        name: &'a str,
        at: usize,
    },
    Cond {
        name: &'a str,
        at: usize,
        /// `?`: use `body` when the parameter is non-empty; `:` when it is empty.
        if_set: bool,
        body: Vec<Piece<'a>>,
    },
}

/// A syntax error at byte offset `at` of the value.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub at: usize,
    pub problem: Problem,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Parses `text` into pieces.
pub(crate) fn parse(text: &str) -> Result<Vec<Piece<'_>>, SyntaxError> {
    Parser { text, pos: 0 }.pieces(None, 0)
}

/// An opened `${`/`$(` whose body is being read: the bracket pair and where the `$` was.
#[derive(Clone, Copy)]
struct Opened {
    open: u8,
    close: u8,
    at: usize,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn pieces(
        &mut self,
        opened: Option<Opened>,
        depth: usize,
    ) -> Result<Vec<Piece<'a>>, SyntaxError> {
        let bytes = self.text.as_bytes();
        let mut out = Vec::new();
        let mut start = self.pos;
        let mut level = 0usize;
        while let Some(&b) = bytes.get(self.pos) {
            if b == b'$' {
                push_text(&mut out, &self.text[start..self.pos]);
                out.push(self.dollar(depth)?);
                start = self.pos;
                continue;
            }
            if let Some(o) = opened {
                if b == o.open {
                    level += 1;
                } else if b == o.close {
                    if level == 0 {
                        push_text(&mut out, &self.text[start..self.pos]);
                        self.pos += 1;
                        return Ok(out);
                    }
                    level -= 1;
                }
            }
            self.pos += 1;
        }
        if let Some(o) = opened {
            return Err(SyntaxError {
                at: o.at,
                problem: Problem::Unclosed {
                    open: char::from(o.open),
                    close: char::from(o.close),
                },
            });
        }
        push_text(&mut out, &self.text[start..]);
        Ok(out)
    }

    fn name(&mut self) -> &'a str {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while bytes.get(self.pos).copied().is_some_and(is_name_byte) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// At a `$`: reads one reference form.
    fn dollar(&mut self, depth: usize) -> Result<Piece<'a>, SyntaxError> {
        let at = self.pos;
        self.pos += 1;
        let bytes = self.text.as_bytes();
        match bytes.get(self.pos).copied() {
            Some(b'$') => {
                self.pos += 1;
                Ok(Piece::Dollar)
            }
            Some(open @ (b'{' | b'(')) => {
                let close = if open == b'{' { b'}' } else { b')' };
                self.pos += 1;
                let name = self.name();
                let (open_c, close_c) = (char::from(open), char::from(close));
                match bytes.get(self.pos).copied() {
                    None => Err(SyntaxError {
                        at,
                        problem: Problem::Unclosed {
                            open: open_c,
                            close: close_c,
                        },
                    }),
                    Some(_) if name.is_empty() => Err(SyntaxError {
                        at,
                        problem: Problem::EmptyReference { open: open_c },
                    }),
                    Some(c) if c == close => {
                        self.pos += 1;
                        Ok(Piece::Ref { name, at })
                    }
                    Some(c @ (b'?' | b':')) => {
                        if depth >= MAX_NESTING {
                            return Err(SyntaxError {
                                at,
                                problem: Problem::NestingTooDeep {
                                    name: name.to_string(),
                                    limit: MAX_NESTING,
                                },
                            });
                        }
                        self.pos += 1;
                        let body = self.pieces(Some(Opened { open, close, at }), depth + 1)?;
                        Ok(Piece::Cond {
                            name,
                            at,
                            if_set: c == b'?',
                            body,
                        })
                    }
                    Some(_) => Err(SyntaxError {
                        at: self.pos,
                        problem: Problem::UnexpectedInReference {
                            found: self.text[self.pos..].chars().next().unwrap_or('?'),
                            open: open_c,
                            close: close_c,
                        },
                    }),
                }
            }
            Some(b) if is_name_byte(b) => {
                let name = self.name();
                Ok(Piece::Ref { name, at })
            }
            _ => Err(SyntaxError {
                at,
                problem: Problem::DanglingDollar,
            }),
        }
    }
}

fn push_text<'a>(out: &mut Vec<Piece<'a>>, text: &'a str) {
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
}

/// A `$name` anywhere in a value, including untaken conditional branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reference<'a> {
    pub name: &'a str,
    pub at: usize,
}

/// Every reference in `pieces`, in order.
pub(crate) fn references<'a>(pieces: &[Piece<'a>]) -> Vec<Reference<'a>> {
    let mut out = Vec::new();
    collect(pieces, &mut out);
    out
}

fn collect<'a>(pieces: &[Piece<'a>], out: &mut Vec<Reference<'a>>) {
    for piece in pieces {
        match piece {
            Piece::Text(_) | Piece::Dollar => {}
            Piece::Ref { name, at } => out.push(Reference { name, at: *at }),
            Piece::Cond { name, at, body, .. } => {
                out.push(Reference { name, at: *at });
                collect(body, out);
            }
        }
    }
}

/// Where a parameter's value comes from, as the expander sees it.
pub(crate) enum Source<'a> {
    /// Text to expand.
    Raw(&'a str),
    /// Text to expand, computed at run time.
    Owned(String),
    /// A final value, not expanded again.
    Literal(String),
    /// The named parameter's expanded value minus its first label, or `localdomain`.
    DomainOf(&'static str),
    Undefined,
}

/// The values the expander reads.
pub(crate) trait Lookup {
    fn source(&self, name: &str) -> Source<'_>;
}

/// An expansion error, in the value of `owner` at byte offset `at` (or the whole value).
#[derive(Debug)]
pub(crate) struct ExpandError {
    pub owner: String,
    pub at: Option<usize>,
    pub problem: Problem,
}

/// `name` minus its first label, or `localdomain` (Postfix's default `mydomain`).
pub(crate) fn domain_of(host: &str) -> String {
    match host.split_once('.') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => "localdomain".to_string(),
    }
}

/// Expands parameters, remembering each result.
pub(crate) struct Expander<'l, L: Lookup> {
    lookup: &'l L,
    memo: HashMap<String, String>,
    stack: Vec<String>,
    depth: usize,
}

impl<'l, L: Lookup> Expander<'l, L> {
    pub(crate) fn new(lookup: &'l L) -> Self {
        Self {
            lookup,
            memo: HashMap::new(),
            stack: Vec::new(),
            depth: 0,
        }
    }

    /// The expanded value of `name`.
    pub(crate) fn value(&mut self, name: &str) -> Result<String, Box<ExpandError>> {
        self.resolve(name, name, None)
    }

    /// Resolves `name`, referred to from the value of `owner` at offset `at`.
    fn resolve(
        &mut self,
        name: &str,
        owner: &str,
        at: Option<usize>,
    ) -> Result<String, Box<ExpandError>> {
        if let Some(v) = self.memo.get(name) {
            return Ok(v.clone());
        }
        let fail = |problem| {
            Box::new(ExpandError {
                owner: owner.to_string(),
                at,
                problem,
            })
        };
        if let Some(i) = self.stack.iter().position(|n| n == name) {
            let mut chain = self.stack[i..].to_vec();
            chain.push(name.to_string());
            return Err(fail(Problem::ExpansionLoop(chain)));
        }
        if self.depth >= MAX_NESTING {
            let top = self.stack.first().map_or(name, String::as_str);
            return Err(fail(Problem::NestingTooDeep {
                name: top.to_string(),
                limit: MAX_NESTING,
            }));
        }
        let value = match self.lookup.source(name) {
            Source::Undefined => {
                return Err(fail(Problem::UndefinedReference {
                    name: name.to_string(),
                    owner: owner.to_string(),
                    suggestion: None,
                }))
            }
            Source::Literal(s) => s,
            Source::Raw(text) => self.expand_text(name, text)?,
            Source::Owned(text) => self.expand_text(name, &text)?,
            Source::DomainOf(of) => {
                self.enter(name);
                let host = self.resolve(of, name, None);
                self.leave();
                domain_of(&host?)
            }
        };
        self.memo.insert(name.to_string(), value.clone());
        Ok(value)
    }

    fn enter(&mut self, name: &str) {
        self.stack.push(name.to_string());
        self.depth += 1;
    }

    fn leave(&mut self) {
        self.stack.pop();
        self.depth -= 1;
    }

    fn expand_text(&mut self, name: &str, text: &str) -> Result<String, Box<ExpandError>> {
        let pieces = parse(text).map_err(|e| {
            Box::new(ExpandError {
                owner: name.to_string(),
                at: Some(e.at),
                problem: e.problem,
            })
        })?;
        let mut out = String::new();
        self.enter(name);
        let result = self.expand_pieces(name, &pieces, &mut out);
        self.leave();
        result.map(|()| out)
    }

    fn expand_pieces(
        &mut self,
        owner: &str,
        pieces: &[Piece<'_>],
        out: &mut String,
    ) -> Result<(), Box<ExpandError>> {
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Dollar => out.push('$'),
                Piece::Ref { name, at } => {
                    let v = self.resolve(name, owner, Some(*at))?;
                    out.push_str(&v);
                }
                Piece::Cond {
                    name,
                    at,
                    if_set,
                    body,
                } => {
                    let v = self.resolve(name, owner, Some(*at))?;
                    if v.is_empty() != *if_set {
                        if self.depth >= MAX_NESTING {
                            return Err(Box::new(ExpandError {
                                owner: owner.to_string(),
                                at: Some(*at),
                                problem: Problem::NestingTooDeep {
                                    name: owner.to_string(),
                                    limit: MAX_NESTING,
                                },
                            }));
                        }
                        self.depth += 1;
                        let result = self.expand_pieces(owner, body, out);
                        self.depth -= 1;
                        result?;
                    }
                }
            }
            if out.len() > MAX_EXPANDED_BYTES {
                return Err(Box::new(ExpandError {
                    owner: owner.to_string(),
                    at: None,
                    problem: Problem::ExpansionTooLong {
                        name: owner.to_string(),
                        limit: MAX_EXPANDED_BYTES,
                    },
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(Vec<(&'static str, &'static str)>);

    impl Lookup for Map {
        fn source(&self, name: &str) -> Source<'_> {
            match self.0.iter().rev().find(|(n, _)| *n == name) {
                Some((_, v)) => Source::Raw(v),
                None if name == "domain" => Source::DomainOf("host"),
                None => Source::Undefined,
            }
        }
    }

    fn expand(
        map: &[(&'static str, &'static str)],
        name: &str,
    ) -> Result<String, Box<ExpandError>> {
        let map = Map(map.to_vec());
        Expander::new(&map).value(name)
    }

    #[test]
    fn every_reference_form() {
        let map = [
            ("host", "mail.example.test"),
            ("empty", ""),
            ("a", "$host"),
            ("b", "${host}"),
            ("c", "$(host)"),
            ("d", "x$$y"),
            ("e", "localhost.$host,"),
            (
                "f",
                "[${empty?set}|${empty:unset}|${host?set}|${host:unset}]",
            ),
            ("g", "$(host?{$host}:x)"),
            ("h", "${host?a{b}c}"),
            ("i", "$domain"),
        ];
        let v = |n| expand(&map, n).unwrap();
        assert_eq!(v("a"), "mail.example.test");
        assert_eq!(v("b"), "mail.example.test");
        assert_eq!(v("c"), "mail.example.test");
        assert_eq!(v("d"), "x$y");
        assert_eq!(v("e"), "localhost.mail.example.test,");
        assert_eq!(v("f"), "[|unset|set|]");
        assert_eq!(v("g"), "{mail.example.test}:x");
        assert_eq!(v("h"), "a{b}c");
        assert_eq!(v("i"), "example.test");
    }

    #[test]
    fn conditionals_test_the_expanded_value() {
        let map = [
            ("empty", ""),
            ("alias", "$empty"),
            ("t", "${alias?yes}${alias:no}"),
        ];
        assert_eq!(expand(&map, "t").unwrap(), "no");
    }

    #[test]
    fn a_loop_names_the_chain() {
        let map = [("a", "x $b"), ("b", "${c?y}"), ("c", "$a")];
        let e = expand(&map, "a").unwrap_err();
        assert_eq!(e.owner, "c");
        assert_eq!(e.at, Some(0));
        match e.problem {
            Problem::ExpansionLoop(chain) => assert_eq!(chain, vec!["a", "b", "c", "a"]),
            other => panic!("{other:?}"),
        }
        let e = expand(&[("a", "$a")], "a").unwrap_err();
        assert!(matches!(e.problem, Problem::ExpansionLoop(ref c) if c == &["a", "a"]));
    }

    #[test]
    fn undefined_reference_points_at_it() {
        let e = expand(&[("a", "xy ${nope}")], "a").unwrap_err();
        assert_eq!((e.owner.as_str(), e.at), ("a", Some(3)));
        assert!(matches!(e.problem, Problem::UndefinedReference { .. }));
    }

    #[test]
    fn syntax_errors_have_offsets() {
        let err = |t: &str| parse(t).unwrap_err();
        let e = err("ab $");
        assert_eq!(e.at, 3);
        assert!(matches!(e.problem, Problem::DanglingDollar));
        let e = err("a $ b");
        assert!(matches!(e.problem, Problem::DanglingDollar));
        let e = err("x ${name");
        assert_eq!(e.at, 2);
        assert!(matches!(
            e.problem,
            Problem::Unclosed {
                open: '{',
                close: '}'
            }
        ));
        let e = err("x ${name?abc");
        assert!(matches!(e.problem, Problem::Unclosed { .. }));
        let e = err("$()");
        assert!(matches!(e.problem, Problem::EmptyReference { open: '(' }));
        let e = err("${a-b}");
        assert_eq!(e.at, 3);
        assert!(matches!(
            e.problem,
            Problem::UnexpectedInReference { found: '-', .. }
        ));
    }

    #[test]
    fn references_include_untaken_branches() {
        let pieces = parse("$a ${b?$c} ${d:${e}}").unwrap();
        let names: Vec<_> = references(&pieces).iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "${a?".repeat(MAX_NESTING + 1) + &"}".repeat(MAX_NESTING + 1);
        assert!(matches!(
            parse(&deep).unwrap_err().problem,
            Problem::NestingTooDeep { .. }
        ));
        // A long chain of parameters, each referring to the next.
        let names: Vec<&'static str> = (0..=MAX_NESTING + 1)
            .map(|i| &*Box::leak(format!("p{i}").into_boxed_str()))
            .collect();
        let mut map = Vec::new();
        for pair in names.windows(2) {
            map.push((
                pair[0],
                &*Box::leak(format!("${}", pair[1]).into_boxed_str()),
            ));
        }
        map.push((names[names.len() - 1], "end"));
        let e = expand(&map, "p0").unwrap_err();
        assert!(matches!(e.problem, Problem::NestingTooDeep { .. }));
    }

    #[test]
    fn doubling_is_bounded_in_size_and_time() {
        let mut map = vec![("x30", "0123456789abcdef")];
        let names: Vec<&'static str> = (0..31)
            .map(|i| &*Box::leak(format!("x{i}").into_boxed_str()))
            .collect();
        for i in 0..30 {
            map.push((
                names[i],
                &*Box::leak(format!("${0}${0}", names[i + 1]).into_boxed_str()),
            ));
        }
        let e = expand(&map, "x0").unwrap_err();
        assert!(matches!(e.problem, Problem::ExpansionTooLong { .. }));
        // Empty leaves: the memo keeps 2^30 references from taking 2^30 steps.
        map[0] = ("x30", "");
        assert_eq!(expand(&map, "x0").unwrap(), "");
    }
}
