//! From one envelope recipient to the destinations its mail goes to: alias expansion
//! (recursive, loop-safe, each destination once), `:include:` lists, `.forward` files, and
//! local users from the accounts database (looked up through the caller).
//!
//! Trusts: the alias tables and include files (read at start-up, before the sandbox, from
//! files the administrator named). Does not trust: the recipient (it came
//! through the queue manager from a client) or a `.forward` file (its owner's words, read by a
//! child running as that owner; see `deliver::read_forward`), whose commands and files are
//! run with that owner's identity only.
//!
//! Decisions (Postfix's `local(8)` where it has a rule):
//! - The local part is folded to lower case before any lookup. An address extension
//!   (`user+ext`) is not split: Postern has no `recipient_delimiter` yet.
//! - Alias entries win over users; `\user` (and a user's own name in its `.forward`) goes to
//!   the mailbox without another alias or `.forward` lookup.
//! - Each name is expanded once per recipient: a name met again is skipped (a loop ends
//!   there, as Postfix's duplicate filter ends it). Nesting deeper than [`MAX_DEPTH`] is an
//!   error (5.4.6), as is an expansion into more than [`MAX_DESTINATIONS`] destinations.
//! - `|command` and `/file` from an alias table or an include file run as the `nobody`
//!   account (Postfix's `default_privs`, for tables owned by root); from a
//!   `.forward` as its owner. Each is refused (5.7.1) unless `allow_mail_to_commands` /
//!   `allow_mail_to_files` names the source (`alias`, `forward`, `include`).
//! - Root (uid 0) is never a delivery identity: mail for a user with uid 0 that no alias
//!   redirects bounces (5.7.1 "mail for root must be aliased"); Postfix delivers it as
//!   `default_privs` instead, which would put root's mail in a file `nobody` owns.
//! - An address in another domain (or a local address whose domain is not in
//!   `mydestination`) is forwarded: collected in [`Expansion::forward`], and the caller sends
//!   the message on through cleanup with the original sender.
//! - `owner-NAME`: when an alias `NAME` is expanded and `owner-NAME` exists, forwarded copies
//!   are sent with the sender `owner-NAME@domain`, as Postfix does for mailing lists.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use policy::aliases::{Aliases, Target};
use policy::passwd::Account;

/// Deepest alias nesting followed (Postfix stops at 100 recursions; real lists nest a few).
pub const MAX_DEPTH: usize = 20;
/// Most destinations one recipient expands into.
pub const MAX_DESTINATIONS: usize = 1000;

/// Where a command or file destination came from, for `allow_mail_to_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Alias,
    Forward,
    Include,
}

impl Source {
    pub fn word(self) -> &'static str {
        match self {
            Source::Alias => "alias",
            Source::Forward => "forward",
            Source::Include => "include",
        }
    }
}

/// One place the mail goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// The user's mailbox (Maildir in the home, or the spool mbox).
    Mailbox(Account),
    /// Append to a file, as `user`.
    File { path: PathBuf, user: Account },
    /// Run `/bin/sh -c command`, as `user`.
    Command { command: String, user: Account },
}

/// Why a recipient cannot be expanded; each maps to a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 5.1.1: neither an alias nor a user.
    UnknownUser(String),
    /// 5.7.1: root without an alias.
    Root(String),
    /// 5.7.1: a command or file not allowed from this source.
    Restricted { what: &'static str, source: Source },
    /// 5.4.6: nesting or fan-out too large.
    Loop(String),
    /// 4.3.0: a `.forward` could not be read now, or an include file was not loaded.
    Temporary(String),
    /// 5.3.5: no `nobody` account to run an alias command or file as.
    NoDefaultPrivs,
}

/// The result of expanding one recipient.
#[derive(Debug, Default)]
pub struct Expansion {
    pub destinations: Vec<Destination>,
    /// Addresses to send the message on to.
    pub forward: Vec<String>,
    /// The sender for forwarded copies (`owner-NAME@domain`), when an owner alias applies.
    pub owner: Option<String>,
}

/// Reads a user's `.forward`: its targets, `None` without one, `Err` when it cannot be read now.
pub type ForwardReader<'a> = dyn FnMut(&Account) -> Result<Option<Vec<Target>>, String> + 'a;

/// What expansion reads.
pub struct Tables<'a> {
    pub aliases: &'a [Aliases],
    /// Include files read at start-up, by path.
    pub includes: &'a HashMap<PathBuf, Vec<Target>>,
    /// Looks up a local account: `Ok(None)` when there is none, `Err` when it cannot be
    /// told now.
    pub users: &'a mut dyn FnMut(&str) -> Result<Option<Account>, String>,
    pub allow_commands: &'a HashSet<String>,
    pub allow_files: &'a HashSet<String>,
    /// Whether a domain is in `mydestination`.
    pub is_local_domain: &'a dyn Fn(&str) -> bool,
    /// A user's `.forward` targets, or `None` without one; `Err` is temporary.
    pub read_forward: &'a mut ForwardReader<'a>,
}

impl Tables<'_> {
    fn alias(&self, name: &str) -> Option<&[Target]> {
        self.aliases
            .iter()
            .find_map(|t| t.get(name))
            .map(|a| a.targets.as_slice())
    }
}

/// Expands the local part `local` of a recipient in `domain`.
pub fn expand(tables: &mut Tables<'_>, local: &str, domain: &str) -> Result<Expansion, Refusal> {
    let mut out = Expansion::default();
    let mut seen = HashSet::new();
    let name = local.to_lowercase();
    if tables.alias(&name).is_some() {
        let owner = format!("owner-{name}");
        if tables.alias(&owner).is_some() {
            out.owner = Some(format!("{owner}@{domain}"));
        }
    }
    expand_name(tables, &name, false, 0, &mut seen, &mut out)?;
    Ok(out)
}

fn expand_name(
    tables: &mut Tables<'_>,
    name: &str,
    escaped: bool,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Expansion,
) -> Result<(), Refusal> {
    if depth > MAX_DEPTH {
        return Err(Refusal::Loop(format!(
            "alias nesting deeper than {MAX_DEPTH} at {name:?}"
        )));
    }
    let key = if escaped {
        format!("\\{name}")
    } else {
        name.to_owned()
    };
    if !seen.insert(key) {
        return Ok(());
    }
    if !escaped {
        if let Some(targets) = tables.alias(name) {
            let targets = targets.to_vec();
            for t in &targets {
                expand_target(tables, t, Source::Alias, None, depth + 1, seen, out)?;
            }
            return Ok(());
        }
    }
    let Some(user) = (tables.users)(name).map_err(Refusal::Temporary)? else {
        return Err(Refusal::UnknownUser(name.to_owned()));
    };
    if user.uid == 0 {
        return Err(Refusal::Root(name.to_owned()));
    }
    if !escaped {
        match (tables.read_forward)(&user) {
            Ok(Some(targets)) if !targets.is_empty() => {
                for t in &targets {
                    // The user's own name in its .forward means its mailbox.
                    let t = match t {
                        Target::Address { address, .. } if address.eq_ignore_ascii_case(name) => {
                            Target::Address {
                                address: address.clone(),
                                escaped: true,
                            }
                        }
                        other => other.clone(),
                    };
                    expand_target(
                        tables,
                        &t,
                        Source::Forward,
                        Some(&user),
                        depth + 1,
                        seen,
                        out,
                    )?;
                }
                return Ok(());
            }
            Ok(_) => {}
            Err(why) => return Err(Refusal::Temporary(why)),
        }
    }
    push(out, Destination::Mailbox(user))
}

fn push(out: &mut Expansion, d: Destination) -> Result<(), Refusal> {
    if out.destinations.len() + out.forward.len() >= MAX_DESTINATIONS {
        return Err(Refusal::Loop(format!(
            "more than {MAX_DESTINATIONS} destinations"
        )));
    }
    if !out.destinations.contains(&d) {
        out.destinations.push(d);
    }
    Ok(())
}

fn privileged_user(tables: &mut Tables<'_>, owner: Option<&Account>) -> Result<Account, Refusal> {
    match owner {
        Some(user) => Ok(user.clone()),
        None => (tables.users)("nobody")
            .map_err(Refusal::Temporary)?
            .filter(|a| a.uid != 0 && a.gid != 0)
            .ok_or(Refusal::NoDefaultPrivs),
    }
}

fn expand_target(
    tables: &mut Tables<'_>,
    target: &Target,
    source: Source,
    owner: Option<&Account>,
    depth: usize,
    seen: &mut HashSet<String>,
    out: &mut Expansion,
) -> Result<(), Refusal> {
    match target {
        Target::Address { address, escaped } => {
            let (local, domain) = match address.rsplit_once('@') {
                Some((l, d)) => (l, Some(d)),
                None => (address.as_str(), None),
            };
            match domain {
                Some(d) if !(tables.is_local_domain)(d) => {
                    if out.destinations.len() + out.forward.len() >= MAX_DESTINATIONS {
                        return Err(Refusal::Loop(format!(
                            "more than {MAX_DESTINATIONS} destinations"
                        )));
                    }
                    let a = address.to_owned();
                    if !out.forward.contains(&a) {
                        out.forward.push(a);
                    }
                    Ok(())
                }
                _ => expand_name(tables, &local.to_lowercase(), *escaped, depth, seen, out),
            }
        }
        Target::Command(command) => {
            if !tables.allow_commands.contains(source.word()) {
                return Err(Refusal::Restricted {
                    what: "commands",
                    source,
                });
            }
            let user = privileged_user(tables, owner)?;
            push(
                out,
                Destination::Command {
                    command: command.clone(),
                    user,
                },
            )
        }
        Target::File(path) => {
            if !tables.allow_files.contains(source.word()) {
                return Err(Refusal::Restricted {
                    what: "files",
                    source,
                });
            }
            let user = privileged_user(tables, owner)?;
            push(
                out,
                Destination::File {
                    path: path.clone(),
                    user,
                },
            )
        }
        Target::Include(path) => {
            if !seen.insert(format!(":include:{}", path.display())) {
                return Ok(());
            }
            let Some(targets) = tables.includes.get(path).cloned() else {
                return Err(Refusal::Temporary(format!(
                    ":include:{} was not loaded at start-up",
                    path.display()
                )));
            };
            for t in &targets {
                expand_target(tables, t, Source::Include, owner, depth + 1, seen, out)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::passwd::Passwd;
    use std::path::Path;

    struct World {
        aliases: Vec<Aliases>,
        includes: HashMap<PathBuf, Vec<Target>>,
        passwd: Passwd,
        commands: HashSet<String>,
        files: HashSet<String>,
        forwards: HashMap<String, Vec<Target>>,
    }

    fn world(aliases: &str) -> World {
        World {
            aliases: vec![Aliases::parse(aliases, Path::new("/etc/aliases")).unwrap()],
            includes: [(
                PathBuf::from("/etc/list"),
                vec![Target::Address {
                    address: "carol".into(),
                    escaped: false,
                }],
            )]
            .into(),
            passwd: Passwd::parse(
                "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n\
                 bob:x:1001:1001::/home/bob:/bin/sh\ncarol:x:1002:1002::/home/carol:/bin/sh\n\
                 nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n",
            ),
            commands: ["alias".to_owned(), "forward".to_owned()].into(),
            files: ["alias".to_owned(), "forward".to_owned()].into(),
            forwards: HashMap::new(),
        }
    }

    fn run(w: &World, local: &str) -> Result<Expansion, Refusal> {
        let forwards = w.forwards.clone();
        let mut read = move |a: &Account| Ok(forwards.get(&a.name).cloned());
        let local_domain = |d: &str| d.eq_ignore_ascii_case("example.test");
        let mut users = |name: &str| Ok(w.passwd.get(name).cloned());
        let mut t = Tables {
            aliases: &w.aliases,
            includes: &w.includes,
            users: &mut users,
            allow_commands: &w.commands,
            allow_files: &w.files,
            is_local_domain: &local_domain,
            read_forward: &mut read,
        };
        expand(&mut t, local, "example.test")
    }

    fn mailboxes(e: &Expansion) -> Vec<&str> {
        e.destinations
            .iter()
            .filter_map(|d| match d {
                Destination::Mailbox(a) => Some(a.name.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn users_aliases_and_lists_expand_once_each() {
        let w = world(
            "team: alice, Bob, alice@example.test, :include:/etc/list, far@remote.test\n\
             owner-team: alice\nloop1: loop2\nloop2: loop1, alice\n",
        );
        let e = run(&w, "ALICE").unwrap();
        assert_eq!(mailboxes(&e), ["alice"]);
        let e = run(&w, "team").unwrap();
        assert_eq!(mailboxes(&e), ["alice", "bob", "carol"]);
        assert_eq!(e.forward, ["far@remote.test"]);
        assert_eq!(e.owner.as_deref(), Some("owner-team@example.test"));
        let e = run(&w, "loop1").unwrap();
        assert_eq!(mailboxes(&e), ["alice"]);
    }

    #[test]
    fn unknown_users_root_and_restrictions_are_refused() {
        let w = world("cmd: |/bin/true\nfile: /tmp/x\nr: root\n");
        assert_eq!(
            run(&w, "nobody-here").unwrap_err(),
            Refusal::UnknownUser("nobody-here".into())
        );
        assert_eq!(run(&w, "root").unwrap_err(), Refusal::Root("root".into()));
        assert_eq!(run(&w, "r").unwrap_err(), Refusal::Root("root".into()));
        let e = run(&w, "cmd").unwrap();
        assert!(
            matches!(&e.destinations[0], Destination::Command { user, .. } if user.uid == 65534)
        );
        let mut w = world("cmd: |/bin/true\ninc: :include:/etc/other\n");
        w.commands.clear();
        assert_eq!(
            run(&w, "cmd").unwrap_err(),
            Refusal::Restricted {
                what: "commands",
                source: Source::Alias
            }
        );
        assert!(matches!(run(&w, "inc").unwrap_err(), Refusal::Temporary(_)));
    }

    #[test]
    fn forward_files_redirect_and_keep_a_copy_with_the_own_name() {
        let mut w = world("");
        w.forwards.insert(
            "alice".into(),
            vec![
                Target::Address {
                    address: "alice".into(),
                    escaped: false,
                },
                Target::Address {
                    address: "bob".into(),
                    escaped: false,
                },
                Target::Command("/usr/bin/filter".into()),
            ],
        );
        let e = run(&w, "alice").unwrap();
        assert_eq!(mailboxes(&e), ["alice", "bob"]);
        assert!(
            matches!(&e.destinations[2], Destination::Command { user, .. } if user.name == "alice")
        );
    }

    #[test]
    fn deep_nesting_is_a_loop() {
        let text: String = (0..=MAX_DEPTH + 1)
            .map(|i| format!("a{i}: a{}\n", i + 1))
            .collect();
        let w = world(&text);
        assert!(matches!(run(&w, "a0").unwrap_err(), Refusal::Loop(_)));
    }
}
