//! Small files that must survive a crash whole: the catalog's applications and the paused queues.
//!
//! [`write_durably`] writes a temporary file beside the target, syncs it, renames it over the target and syncs
//! the directory, so a crash leaves either the old file or the new one, never a mix.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` (in directory `dir`) so that a crash leaves the old file or the new one whole.
pub fn write_durably(path: &Path, dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        write_durably(&path, dir.path(), b"one").unwrap();
        write_durably(&path, dir.path(), b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no-such-dir").join("y.json");
        assert!(write_durably(&missing, dir.path(), b"x").is_err());
    }
}
