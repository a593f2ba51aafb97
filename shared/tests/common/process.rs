//! The workspace's own binaries run as child processes (the local gateway,
//! a function): where cargo built them, and a handle that kills the child
//! when the test ends, pass or fail.

use std::process::Child;

/// `target/debug/<name>`: in `CARGO_TARGET_DIR` (now, or when the tests
/// were compiled) when one is used, else the workspace's own.
pub fn binary(name: &str) -> String {
    let target = std::env::var("CARGO_TARGET_DIR")
        .ok()
        .or_else(|| option_env!("CARGO_TARGET_DIR").map(String::from))
        .unwrap_or_else(|| format!("{}/../target", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{target}/debug/{name}");
    assert!(std::path::Path::new(&path).exists(), "{path} is missing: run `cargo build -p {name}` first");
    path
}

/// A child process killed (SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
