//! Records the git commit the binary was built from, for `isoswitch_build_info`.
use std::path::PathBuf;

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=ISOSWITCH_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves. In a worktree `.git` is a file and HEAD lives
    // in the worktree's own git directory, the branches in the common one;
    // watching a path that does not exist would rerun this on every build.
    let mut watched = vec![PathBuf::from("build.rs")];
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(PathBuf::from(dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = PathBuf::from(common);
        watched.push(common.join("refs/heads"));
        watched.push(common.join("packed-refs"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
