//! The master's start-up contract with `postern start`: a failure prints its reason on stderr,
//! nothing on stdout, and exits 1.

use std::process::Command;

fn master() -> Command {
    Command::new(env!("CARGO_BIN_EXE_postern-master"))
}

#[test]
fn usage_errors_exit_1_with_the_reason() {
    for args in [&[][..], &["-c"][..], &["--frobnicate"][..]] {
        let out = master().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("postern-master: fatal: "), "{err}");
        assert!(err.contains("usage: postern-master -c CONFIG_DIR"), "{err}");
    }
}

#[test]
fn a_missing_configuration_exits_1_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("postern-master-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = master().arg("-c").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no ready line on failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("main.cf"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
