//! The `preview` command of the binary under test, fed cases on stdin.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

/// Runs `mixpanel-actions preview <args>` with `cases` (one JSON line each) on
/// stdin and returns what it printed and how it exited.
pub fn run_preview(args: &[&str], cases: &[String]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixpanel-actions"))
        .arg("preview")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn preview");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(cases.join("\n").as_bytes()).expect("write the cases");
    drop(stdin);
    child.wait_with_output().expect("preview output")
}
