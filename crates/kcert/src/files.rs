//! Writing files the way a credential tool must: atomically (temp file, fsync, link/rename),
//! keys with mode 0600, and never over an existing file unless asked.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who may read a file we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Private keys and kubeconfigs: 0600.
    Private,
    /// Certificates and CSRs: 0644.
    Public,
}

/// A file staged next to its destination, not yet visible under its name.
pub struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    force: bool,
}

impl Staged {
    /// Stage `contents` for `dest`. Fails now if `dest` exists and `force` is false.
    pub fn new(dest: &Path, contents: &[u8], mode: Mode, force: bool) -> Result<Self> {
        if dest.is_dir() {
            bail!("{}: is a directory; give a file name", dest.display());
        }
        if !force && dest.exists() {
            bail!(
                "{}: already exists; pass --force to replace it",
                dest.display()
            );
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            bail!(
                "{}: directory {} does not exist",
                dest.display(),
                dir.display()
            );
        }
        let name = dest.file_name().context("destination has no file name")?;
        let tmp = dir.join(format!(
            ".{}.kcert-{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(match mode {
                Mode::Private => 0o600,
                Mode::Public => 0o644,
            })
            .open(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        let written = file.write_all(contents).and_then(|_| file.sync_all());
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("{}: cannot write", dest.display()));
        }
        Ok(Staged {
            tmp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// Make the file visible under its name. Without `force`, a hard link refuses atomically to
    /// replace a file that appeared meanwhile; with it, a rename replaces it atomically.
    pub fn commit(self) -> Result<PathBuf> {
        let result = if self.force {
            std::fs::rename(&self.tmp, &self.dest)
        } else {
            std::fs::hard_link(&self.tmp, &self.dest).and_then(|_| std::fs::remove_file(&self.tmp))
        };
        match result {
            Ok(()) => Ok(self.dest.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!(
                    "{}: already exists; pass --force to replace it",
                    self.dest.display()
                )
            }
            Err(e) => Err(e).with_context(|| format!("{}: cannot write", self.dest.display())),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Write several files all-or-nothing: every file is staged first, then all are committed; if a
/// commit fails, the ones already committed are removed again.
pub fn write_all(files: Vec<(PathBuf, Vec<u8>, Mode)>, force: bool) -> Result<Vec<PathBuf>> {
    let mut staged = Vec::new();
    for (dest, contents, mode) in &files {
        staged.push(Staged::new(dest, contents, *mode, force)?);
    }
    let mut done: Vec<PathBuf> = Vec::new();
    for file in staged {
        match file.commit() {
            Ok(p) => done.push(p),
            Err(e) => {
                if !force {
                    for p in &done {
                        let _ = std::fs::remove_file(p);
                    }
                }
                return Err(e);
            }
        }
    }
    Ok(done)
}

/// Read a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_existing_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        Staged::new(&key, b"one", Mode::Private, false)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = Staged::new(&key, b"two", Mode::Private, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(&key).unwrap(), b"one");
        Staged::new(&key, b"two", Mode::Private, true)
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"two");
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_pair_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&b, b"old").unwrap();
        let err = write_all(
            vec![
                (a.clone(), b"new".to_vec(), Mode::Private),
                (b.clone(), b"new".to_vec(), Mode::Public),
            ],
            false,
        );
        assert!(err.is_err());
        assert!(!a.exists());
        assert_eq!(std::fs::read(&b).unwrap(), b"old");
    }

    #[test]
    fn a_dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        drop(Staged::new(&f, b"x", Mode::Public, false).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
