//! The one file watcher of the policy and CA sources: poll each file's modification time and
//! length, and act when any of them changes (and once at start). Polling, not inotify, because
//! Kubernetes mounts ConfigMaps and Secrets through symlink swaps that notify unreliably.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// A file's modification time and length; `None` when it cannot be read.
pub type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

/// Call `on_change` with the files' stamps now and whenever one changes, polling `every`.
pub async fn watch_files(
    paths: Vec<PathBuf>,
    every: Duration,
    mut on_change: impl FnMut(&[Stamp]),
) {
    let mut last: Option<Vec<Stamp>> = None;
    loop {
        let now: Vec<Stamp> = paths.iter().map(stamp).collect();
        if last.as_ref() != Some(&now) {
            on_change(&now);
            last = Some(now);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_seen_once_each() {
        let dir = tempfile_dir();
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a").unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(watch_files(
            vec![file.clone()],
            Duration::from_millis(20),
            move |st| s.lock().unwrap().push(st[0].map(|(_, len)| len)),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(&file, "abc").unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&file).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        task.abort();
        assert_eq!(*seen.lock().unwrap(), vec![Some(1), Some(3), None]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("kcert-file-watch-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
