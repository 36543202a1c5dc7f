//! Fetching the official CIFAR-10 archive into the cache.
//!
//! Why external `curl` and `tar`: an HTTP client, TLS and gzip as crates
//! would multiply the bench's compile time for a step that runs once per
//! machine; both tools are on every system that can reach the network.
//! The archive's MD5 is checked here before it is unpacked.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// The dataset's home at the University of Toronto.
const URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the archive, as published there.
const MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

/// Downloads, checks and unpacks the archive into `cache`, which then
/// holds `cifar-10-batches-bin/`.
pub fn fetch(cache: &Path) -> Result<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Error::new(format!("{what}: {e}"));
    std::fs::create_dir_all(cache).map_err(|e| fail(&format!("creating {}", cache.display()), &e))?;
    let part = cache.join("cifar-10-binary.tar.gz.part");
    // curl's own message goes into ours, so a failure stays one line.
    let out = Command::new("curl")
        .args(["-fsSL", "--connect-timeout", "15", "-o"])
        .arg(&part)
        .arg(URL)
        .output()
        .map_err(|e| fail("running curl", &e))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&part);
        let why = String::from_utf8_lossy(&out.stderr).trim().replace('\n', "; ");
        return Err(Error::new(format!("curl could not fetch {URL}: {why}")));
    }
    let bytes = std::fs::read(&part).map_err(|e| fail(&format!("reading {}", part.display()), &e))?;
    let digest: String = md5(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    if digest != MD5 {
        let _ = std::fs::remove_file(&part);
        return Err(Error::new(format!("{URL}: MD5 {digest}, expected {MD5}")));
    }
    let archive = cache.join("cifar-10-binary.tar.gz");
    std::fs::rename(&part, &archive).map_err(|e| fail("renaming the download", &e))?;
    let status = Command::new("tar").arg("-xzf").arg(&archive).arg("-C").arg(cache).status().map_err(|e| fail("running tar", &e))?;
    if !status.success() {
        return Err(Error::new(format!("tar could not unpack {} ({status})", archive.display())));
    }
    Ok(())
}

/// MD5 (RFC 1321) of `data`.
fn md5(data: &[u8]) -> [u8; 16] {
    const SHIFTS: [[u32; 4]; 4] = [[7, 12, 17, 22], [5, 9, 14, 20], [4, 11, 16, 23], [6, 10, 15, 21]];
    // K[i] = floor(|sin(i + 1)| * 2^32), as the RFC defines it.
    let k: Vec<u32> = (0..64).map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32).collect();
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(SHIFTS[i / 16][i % 4]));
        }
        for (h, v) in h.iter_mut().zip([a, b, c, d]) {
            *h = h.wrapping_add(v);
        }
    }
    let mut out = [0; 16];
    for (o, v) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::md5;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_matches_rfc_1321_vectors() {
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        let long = b"12345678901234567890123456789012345678901234567890123456789012345678901234567890";
        assert_eq!(hex(md5(long)), "57edf4a22be3c955ac49da2e2107b67a");
    }
}
