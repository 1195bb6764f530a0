//! The test runner of the whole-system test files that have root-only tests (`harness = false`
//! in `Cargo.toml`): libtest's `#[ignore]` is decided at compile time, but whether a test can
//! run depends on who runs the binary (`scripts/test.sh` runs the same executables as root and
//! as `nobody`). A root-only test run by another user is reported as ignored, with the reason,
//! instead of passing without asserting anything.
//!
//! Output and exit status follow libtest (`test NAME ... ok`, `... ignored, REASON`,
//! `... FAILED`, `test result: ...`, exit status 101 on a failure), so `cargo test` reads the
//! same. Arguments: name filters (substrings, or whole names with `--exact`), `--list`,
//! `--test-threads N` (default `RUST_TEST_THREADS`, else the number of CPUs); libtest's output
//! flags (`--nocapture`, `--show-output`, `-q`) are accepted and change nothing: output is not
//! captured. Each test runs on a thread of its own named after it, so a panic names its test.
//!
//! Trusts: nothing but its own arguments.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Who can run a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Runs as whoever runs the binary.
    Anyone,
    /// Needs root; run by another user the test is reported as ignored with this reason.
    Root(&'static str),
}

/// One test of a file.
pub struct Test {
    pub name: &'static str,
    pub needs: Needs,
    pub run: fn(),
}

/// A test that runs as anyone.
pub const fn test(name: &'static str, run: fn()) -> Test {
    Test {
        name,
        needs: Needs::Anyone,
        run,
    }
}

/// A test that needs root; `reason` says why (shown when it is ignored).
pub const fn root_test(name: &'static str, reason: &'static str, run: fn()) -> Test {
    Test {
        name,
        needs: Needs::Root(reason),
        run,
    }
}

/// What the command line asked for.
struct Options {
    filters: Vec<String>,
    exact: bool,
    list: bool,
    threads: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        filters: Vec::new(),
        exact: false,
        list: false,
        threads: std::env::var("RUST_TEST_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => options.exact = true,
            "--list" => options.list = true,
            "--test-threads" => {
                let value = args.next().ok_or("--test-threads needs a number")?;
                options.threads = value
                    .parse()
                    .map_err(|_| format!("--test-threads {value:?}: not a number"))?;
            }
            "--nocapture" | "--show-output" | "-q" | "--quiet" => {}
            _ => {
                if let Some(value) = arg.strip_prefix("--test-threads=") {
                    options.threads = value
                        .parse()
                        .map_err(|_| format!("{arg:?}: not a number"))?;
                } else if arg.starts_with('-') {
                    return Err(format!("unknown option {arg:?}"));
                } else {
                    options.filters.push(arg);
                }
            }
        }
    }
    options.threads = options.threads.max(1);
    Ok(options)
}

/// Runs the selected `tests` and reports like libtest; the `main` of a test file.
pub fn run(tests: &[Test]) -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(101);
        }
    };
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| {
            options.filters.is_empty()
                || options.filters.iter().any(|f| {
                    if options.exact {
                        t.name == f
                    } else {
                        t.name.contains(f.as_str())
                    }
                })
        })
        .collect();
    let filtered = tests.len() - selected.len();
    if options.list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return ExitCode::SUCCESS;
    }
    let root = nix::unistd::geteuid().is_root();
    let started = Instant::now();
    println!("\nrunning {} tests", selected.len());

    let next = AtomicUsize::new(0);
    let failed: Mutex<Vec<&str>> = Mutex::new(Vec::new());
    let (passed, ignored) = (AtomicUsize::new(0), AtomicUsize::new(0));
    std::thread::scope(|scope| {
        for _ in 0..options.threads.min(selected.len()) {
            scope.spawn(|| {
                while let Some(t) = selected.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Needs::Root(reason) = t.needs {
                        if !root {
                            println!(
                                "test {} ... ignored, needs root: {reason} (run as uid {})",
                                t.name,
                                nix::unistd::getuid()
                            );
                            ignored.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let outcome = std::thread::Builder::new()
                        .name(t.name.to_owned())
                        .spawn(t.run)
                        .map_err(|e| eprintln!("cannot start a thread for {}: {e}", t.name))
                        .and_then(|thread| thread.join().map_err(|_| ()));
                    match outcome {
                        Ok(()) => {
                            println!("test {} ... ok", t.name);
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(()) => {
                            println!("test {} ... FAILED", t.name);
                            failed
                                .lock()
                                .unwrap_or_else(|poisoned| poisoned.into_inner())
                                .push(t.name);
                        }
                    }
                }
            });
        }
    });
    let failed = failed
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !failed.is_empty() {
        println!("\nfailures (their panics are above, on stderr):");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {filtered} filtered out; \
         finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        passed.into_inner(),
        failed.len(),
        ignored.into_inner(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
