//! Whole-system tests of mail intake (placeholder while the harness lands).

use postern_tests::instance::Instance;

#[test]
fn harness_starts_configures_and_stops_an_instance() {
    let mut inst = Instance::start("harness", &[("smtpd_timeout", "7s")]);
    let conf = inst.postern(&["conf", "smtpd_timeout"]);
    assert_eq!(
        String::from_utf8_lossy(&conf.stdout).trim(),
        "smtpd_timeout = 7s"
    );
    assert!(inst.postern(&["status"]).status.success());
    assert!(inst.queue_files().is_empty());
    let dir = inst.dir().to_path_buf();
    assert!(inst.stop().status.success());
    assert!(!inst.postern(&["status"]).status.success());
    drop(inst);
    assert!(!dir.exists());
}
