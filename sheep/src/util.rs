//! Small helpers shared by several modules.

use std::io::Write;
use std::path::Path;

/// Replaces the file at `path` with `bytes` so that a crash leaves either the
/// old or the new content: write a temporary file, fsync it, rename it over
/// the old one, then fsync the directory (the rename is durable only then).
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Now as Sheepdog's timestamp: seconds in the high 32 bits, nanoseconds in
/// the low 32.
pub fn sd_now() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    qemu_proto::inode::sd_time(now.as_secs(), now.subsec_nanos())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
