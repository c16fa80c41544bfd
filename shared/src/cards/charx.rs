//! CHARX cards: a zip archive with the V3 card as `card.json` at its root and assets beside it
//! (SPEC_V3, "CHARX"). Only `card.json` is read — images are not needed for chat, and the
//! card's `assets` list names them — so this is a small zip reader of its own: the central
//! directory, stored and deflated entries, no encryption. [`write`] makes a stored archive
//! (tests and fixtures).

use std::io::Read;

use super::{CardError, MAX_JSON_BYTES};

fn u16_at(b: &[u8], at: usize) -> Result<u16, CardError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| CardError::BadZip(format!("truncated at byte {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, CardError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| CardError::BadZip(format!("truncated at byte {at}")))
}

/// One central-directory entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    method: u16,
    flags: u16,
    compressed: usize,
    size: usize,
    local: usize,
}

/// The archive's file list (central directory).
pub fn entries(bytes: &[u8]) -> Result<Vec<Entry>, CardError> {
    // End of central directory: 22 bytes plus a comment of up to 64 KiB, at the end.
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    let eocd = (lowest..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| bytes[i..].starts_with(b"PK\x05\x06"))
        .ok_or_else(|| CardError::BadZip("no end of central directory".into()))?;
    let count = u16_at(bytes, eocd + 10)? as usize;
    let mut at = u32_at(bytes, eocd + 16)? as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if u32_at(bytes, at)? != 0x0201_4b50 {
            return Err(CardError::BadZip(format!(
                "bad central directory entry at byte {at}"
            )));
        }
        let name_len = u16_at(bytes, at + 28)? as usize;
        let extra = u16_at(bytes, at + 30)? as usize;
        let comment = u16_at(bytes, at + 32)? as usize;
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| CardError::BadZip("truncated file name".into()))?;
        out.push(Entry {
            name: String::from_utf8_lossy(name).into_owned(),
            flags: u16_at(bytes, at + 8)?,
            method: u16_at(bytes, at + 10)?,
            compressed: u32_at(bytes, at + 20)? as usize,
            size: u32_at(bytes, at + 24)? as usize,
            local: u32_at(bytes, at + 42)? as usize,
        });
        at += 46 + name_len + extra + comment;
    }
    Ok(out)
}

/// The bytes of one entry, at most `limit` of them.
fn read(bytes: &[u8], e: &Entry, limit: usize) -> Result<Vec<u8>, CardError> {
    if e.flags & 1 != 0 {
        return Err(CardError::BadZip(format!("{} is encrypted", e.name)));
    }
    if e.size > limit {
        return Err(CardError::TooLarge {
            what: "card.json",
            size: e.size,
            limit,
        });
    }
    if u32_at(bytes, e.local)? != 0x0403_4b50 {
        return Err(CardError::BadZip(format!("bad local header of {}", e.name)));
    }
    let start = e.local
        + 30
        + u16_at(bytes, e.local + 26)? as usize
        + u16_at(bytes, e.local + 28)? as usize;
    let data = bytes
        .get(start..start + e.compressed)
        .ok_or_else(|| CardError::BadZip(format!("{} runs past the end", e.name)))?;
    match e.method {
        0 => Ok(data.to_vec()),
        8 => {
            let mut out = Vec::new();
            // One byte over the limit tells a lying size field from a real fit.
            flate2::read::DeflateDecoder::new(data)
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|err| CardError::BadZip(format!("{}: {err}", e.name)))?;
            if out.len() > limit {
                return Err(CardError::TooLarge {
                    what: "card.json",
                    size: out.len(),
                    limit,
                });
            }
            Ok(out)
        }
        m => Err(CardError::BadZip(format!(
            "{} uses compression method {m} (only stored and deflate are read)",
            e.name
        ))),
    }
}

/// The text of `card.json` at the archive's root.
pub fn card_json(bytes: &[u8]) -> Result<String, CardError> {
    let list = entries(bytes)?;
    let entry = list
        .iter()
        .find(|e| e.name == "card.json")
        .ok_or(CardError::NoCardJson)?;
    let data = read(bytes, entry, MAX_JSON_BYTES)?;
    String::from_utf8(data).map_err(|e| CardError::Json(format!("card.json is not UTF-8: {e}")))
}

/// A stored (uncompressed) zip archive of `files`.
pub fn write(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let crc = crc32fast::hash(data);
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = sig.to_le_bytes().to_vec();
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&[0; 6]); // comment, disk, internal attrs
                h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend(header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}
