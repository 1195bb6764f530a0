//! Test helpers: running a permission test as an unprivileged user when the tests run
//! as root (root passes every permission check, so an unwritable mailbox is not one).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The uid and gid of `nobody` on Debian.
const NOBODY: u32 = 65534;

/// When running as root, runs the test `name` of this test binary again as `nobody`,
/// asserts that it passed, and returns `true` (the caller returns). Returns `false` when
/// not root: the caller runs the test itself.
pub fn rerun_unprivileged(name: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("TMPDIR", "/tmp")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the test as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "as nobody: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}
