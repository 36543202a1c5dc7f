//! Fetching the official CIFAR-10 archive into the cache, in-process
//! (ureq over rustls, flate2, tar), so no `curl` or `tar` program is needed.
//!
//! Every step leaves the cache as it was or complete: the download goes to
//! a `.part` file renamed only once its MD5 matches, and the archive is
//! unpacked into a scratch directory whose data directory is renamed into
//! place only when the whole archive unpacked.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::{Error, Result};
use crate::progress;

/// The dataset's home at the University of Toronto.
const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the archive, as published there.
const MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The archive's name in the cache.
const ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// The directory the archive holds.
const DATA_DIR: &str = "cifar-10-batches-bin";
/// Bytes read at most (the archive has 170 MB), so a wrong server cannot
/// fill the disk.
const MAX_BYTES: u64 = 256 << 20;

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::new(format!("{what}: {e}"))
}

/// Downloads, checks and unpacks the archive into `cache`, which then
/// holds `cifar-10-batches-bin/`.
pub fn fetch(cache: &Path) -> Result<()> {
    std::fs::create_dir_all(cache).map_err(io_error(format!("creating {}", cache.display())))?;
    let part = cache.join(format!("{ARCHIVE}.part"));
    let done = download(URL, &part).and_then(|()| install(&part, cache, MD5));
    if done.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    done
}

/// Streams `url` into `part`, with a progress bar of the bytes.
fn download(url: &str, part: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_connect(Some(Duration::from_secs(15))).build().into();
    // ureq's message goes into ours on one line: the caller's notice is one line.
    let fail = |e: &dyn std::fmt::Display| Error::new(format!("cannot fetch {url}: {}", e.to_string().replace('\n', "; ")));
    let mut response = agent.get(url).call().map_err(|e| fail(&e))?;
    let body = response.body_mut();
    let bar = progress::bar(body.content_length().unwrap_or(0), progress::DOWNLOAD, true);
    let mut reader = bar.wrap_read(body.with_config().limit(MAX_BYTES).reader());
    let mut file = File::create(part).map_err(io_error(format!("creating {}", part.display())))?;
    std::io::copy(&mut reader, &mut file).map_err(|e| fail(&e))?;
    bar.finish_and_clear();
    file.sync_all().map_err(io_error(format!("writing {}", part.display())))
}

/// Lowercase hex MD5 of everything `reader` yields.
fn md5_hex(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Md5::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks the downloaded `part` against `md5` (removing it when it does not
/// match), renames it to the archive, and unpacks that into `cache`.
fn install(part: &Path, cache: &Path, md5: &str) -> Result<()> {
    let file = File::open(part).map_err(io_error(format!("reading {}", part.display())))?;
    let digest = md5_hex(BufReader::new(file)).map_err(io_error(format!("reading {}", part.display())))?;
    if digest != md5 {
        let _ = std::fs::remove_file(part);
        return Err(Error::new(format!("{URL}: MD5 {digest}, expected {md5}")));
    }
    let archive = cache.join(ARCHIVE);
    std::fs::rename(part, &archive).map_err(io_error("renaming the download".into()))?;
    unpack(&archive, cache)
}

/// Unpacks the gzipped tar `archive` into a scratch directory of `cache`,
/// then moves its `cifar-10-batches-bin` into `cache` (replacing an
/// incomplete one, which is why a download was needed).
fn unpack(archive: &Path, cache: &Path) -> Result<()> {
    let scratch = cache.join("unpack.part");
    let _ = std::fs::remove_dir_all(&scratch);
    let file = File::open(archive).map_err(io_error(format!("reading {}", archive.display())))?;
    let unpacked = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file))).unpack(&scratch);
    let moved = unpacked.map_err(io_error(format!("cannot unpack {}", archive.display()))).and_then(|()| {
        let (from, to) = (scratch.join(DATA_DIR), cache.join(DATA_DIR));
        if !from.is_dir() {
            return Err(Error::new(format!("{}: no {DATA_DIR}/ in the archive", archive.display())));
        }
        let _ = std::fs::remove_dir_all(&to);
        std::fs::rename(&from, &to).map_err(io_error(format!("moving {} into place", to.display())))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    #[test]
    fn md5_matches_rfc_1321_vectors() {
        assert_eq!(md5_hex(&b""[..]).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(&b"abc"[..]).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        let long = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(md5_hex(&long[..]).unwrap(), "57edf4a22be3c955ac49da2e2107b67a");
    }

    /// A gzipped tar with `files` (path, contents).
    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            tar.append_data(&mut header, path, *bytes).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    fn cache(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("frog-bench-download-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_checked_archive_is_unpacked_into_place() {
        let dir = cache("ok");
        let bytes = archive(&[("cifar-10-batches-bin/test_batch.bin", b"records"), ("cifar-10-batches-bin/readme.html", b"hi")]);
        let part = dir.join("a.part");
        std::fs::write(&part, &bytes).unwrap();
        // A stale, incomplete data directory is replaced.
        std::fs::create_dir_all(dir.join(DATA_DIR)).unwrap();
        std::fs::write(dir.join(DATA_DIR).join("data_batch_1.bin"), b"partial").unwrap();
        install(&part, &dir, &md5_hex(&bytes[..]).unwrap()).unwrap();
        assert_eq!(std::fs::read(dir.join(DATA_DIR).join("test_batch.bin")).unwrap(), b"records");
        assert!(!dir.join(DATA_DIR).join("data_batch_1.bin").exists());
        assert!(!part.exists() && dir.join(ARCHIVE).exists() && !dir.join("unpack.part").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_wrong_checksum_leaves_nothing_behind() {
        let dir = cache("md5");
        let part = dir.join("a.part");
        std::fs::write(&part, archive(&[("cifar-10-batches-bin/test_batch.bin", b"records")])).unwrap();
        let e = install(&part, &dir, MD5).unwrap_err().to_string();
        assert!(e.contains("MD5") && e.contains(MD5), "{e}");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "the cache is left empty");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_or_foreign_archive_is_an_error_and_moves_nothing() {
        let dir = cache("broken");
        let part = dir.join("a.part");
        let mut truncated = archive(&[("cifar-10-batches-bin/test_batch.bin", &[7u8; 5000])]);
        truncated.truncate(truncated.len() / 2);
        std::fs::write(&part, &truncated).unwrap();
        let e = install(&part, &dir, &md5_hex(&truncated[..]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("cannot unpack"), "{e}");
        assert!(!dir.join(DATA_DIR).exists() && !dir.join("unpack.part").exists());

        let other = archive(&[("elsewhere/file.bin", b"x")]);
        std::fs::write(&part, &other).unwrap();
        let e = install(&part, &dir, &md5_hex(&other[..]).unwrap()).unwrap_err().to_string();
        assert!(e.contains("no cifar-10-batches-bin/"), "{e}");
        assert!(!dir.join(DATA_DIR).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
