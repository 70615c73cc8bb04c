//! Seed discovery for `-c local`: peers on one host find each other through a
//! runtime directory, with nothing to configure.
//!
//! Each running sheep keeps a file named after its gossip address in the
//! directory and removes it when it exits cleanly. A starting sheep lists the
//! directory and offers every other address to gossip as a seed. Files left
//! behind by a crashed sheep are harmless: joining a dead address just fails,
//! and the entry is rewritten when a sheep with that address starts again.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The runtime directory of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    dir: PathBuf,
}

impl LocalDirectory {
    /// The directory used by plain `-c local`.
    pub fn default_path() -> PathBuf {
        std::env::temp_dir().join("sheepfold-local")
    }

    /// Opens (creating it if needed) the runtime directory.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(LocalDirectory { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Announces this node's gossip address.
    pub fn register(&self, gossip: SocketAddr) -> io::Result<()> {
        std::fs::write(self.entry(gossip), gossip.to_string())
    }

    /// Removes this node's entry (on clean exit).
    pub fn unregister(&self, gossip: SocketAddr) {
        let _ = std::fs::remove_file(self.entry(gossip));
    }

    /// Gossip addresses of every other registered node.
    pub fn seeds(&self, own: SocketAddr) -> Vec<SocketAddr> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<SocketAddr>().ok())
            .filter(|a| *a != own)
            .collect()
    }

    fn entry(&self, gossip: SocketAddr) -> PathBuf {
        self.dir.join(gossip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_nodes_see_each_other() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = LocalDirectory::open(tmp.path().join("local")).unwrap();
        let a: SocketAddr = "127.0.0.1:17000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:17001".parse().unwrap();
        dir.register(a).unwrap();
        dir.register(b).unwrap();
        assert_eq!(dir.seeds(a), vec![b]);
        dir.unregister(b);
        assert!(dir.seeds(a).is_empty());
    }
}
