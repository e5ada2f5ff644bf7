//! What the files a config section reads contain. The config text names only
//! paths, so a spec or CA file edited in place leaves it equal; a reload
//! compares these digests too, and rebuilds what reads a file that changed.

use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};

/// The SHA-256 of each file a section reads, with its path, in the order the
/// section names them. Taken before the section is built from the files, so
/// an edit that lands in between shows as a change at the next reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileContents(Vec<(PathBuf, [u8; SHA256_OUTPUT_LEN])>);

/// A file a section reads that could not be read to take its digest.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read it to see whether it changed: {source}")]
pub struct UnreadableFile {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl FileContents {
    /// Reads every file in `paths` and takes its digest.
    pub fn read<'a>(
        paths: impl IntoIterator<Item = &'a Path>,
    ) -> Result<FileContents, UnreadableFile> {
        let mut digests = Vec::new();
        for path in paths {
            let bytes = std::fs::read(path).map_err(|source| UnreadableFile {
                path: path.display().to_string(),
                source,
            })?;
            let mut sha256 = [0u8; SHA256_OUTPUT_LEN];
            sha256.copy_from_slice(digest(&SHA256, &bytes).as_ref());
            digests.push((path.to_path_buf(), sha256));
        }
        Ok(FileContents(digests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "isoswitch-file-contents-{tag}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn a_file_rewritten_with_other_bytes_differs_and_the_same_bytes_do_not() {
        let dir = scratch("rewrite");
        let path = dir.join("ca.pem");
        std::fs::write(&path, "first").expect("written");
        let before = FileContents::read([path.as_path()]).expect("readable");
        std::fs::write(&path, "first").expect("written");
        assert_eq!(
            FileContents::read([path.as_path()]).expect("readable"),
            before
        );
        std::fs::write(&path, "second").expect("written");
        assert_ne!(
            FileContents::read([path.as_path()]).expect("readable"),
            before
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let dir = scratch("missing");
        let missing = dir.join("gone.pem");
        let err = FileContents::read([missing.as_path()]).expect_err("no such file");
        assert!(err.to_string().contains("gone.pem"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
