//! PNG/APNG cards: the card is base64-encoded JSON in a `tEXt` chunk, `ccv3` (V3) or `chara`
//! (V1/V2); `ccv3` wins when both are there (SPEC_V3, "Embedding Methods"). Reading walks the
//! chunk list and decodes nothing else (the image is not needed for chat); writing makes a
//! plain 1×1 image carrying the given text chunks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{CardError, MAX_JSON_BYTES};

/// The eight bytes every PNG starts with.
pub const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The `tEXt` chunks of a PNG as (keyword, text bytes), in file order.
pub fn text_chunks(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CardError> {
    if !bytes.starts_with(SIGNATURE) {
        return Err(CardError::BadPng("no PNG signature".into()));
    }
    let mut out = Vec::new();
    let mut at = SIGNATURE.len();
    loop {
        if at == bytes.len() {
            // No IEND: tolerated, the chunks before it were whole.
            break;
        }
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| CardError::BadPng(format!("truncated chunk header at byte {at}")))?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let data_end = (at + 8)
            .checked_add(len)
            .filter(|end| end.checked_add(4).is_some_and(|e| e <= bytes.len()))
            .ok_or_else(|| {
                CardError::BadPng(format!(
                    "chunk {} at byte {at} runs past the end of the file",
                    String::from_utf8_lossy(kind)
                ))
            })?;
        let data = &bytes[at + 8..data_end];
        if kind == b"tEXt" {
            let nul = data
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| CardError::BadPng("tEXt chunk without a keyword".into()))?;
            out.push((
                String::from_utf8_lossy(&data[..nul]).into_owned(),
                data[nul + 1..].to_vec(),
            ));
        }
        at = data_end + 4;
        if kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

/// The card JSON a PNG carries: `ccv3` if present, else `chara`.
pub fn card_json(bytes: &[u8]) -> Result<String, CardError> {
    let chunks = text_chunks(bytes)?;
    let pick = |name: &str| {
        chunks
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(k, v)| (k.clone(), v))
    };
    let (chunk, encoded) = pick("ccv3")
        .or_else(|| pick("chara"))
        .ok_or(CardError::NoCardChunk)?;
    // base64 grows by 4/3: bound the decoded size before decoding.
    if encoded.len() / 4 * 3 > MAX_JSON_BYTES {
        return Err(CardError::TooLarge {
            what: "card JSON",
            size: encoded.len() / 4 * 3,
            limit: MAX_JSON_BYTES,
        });
    }
    let cleaned: Vec<u8> = encoded
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let decoded = STANDARD
        .decode(&cleaned)
        .map_err(|e| CardError::BadBase64 {
            chunk: chunk.clone(),
            reason: e.to_string(),
        })?;
    String::from_utf8(decoded).map_err(|e| CardError::BadBase64 {
        chunk,
        reason: format!("decodes to bytes that are not UTF-8 text: {e}"),
    })
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// A plain 1×1 grey PNG carrying `texts` as `tEXt` chunks, each value base64-encoded (what
/// card readers expect).
pub fn write(texts: &[(&str, &str)]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    // IHDR: 1×1, 8-bit greyscale.
    chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    for (keyword, text) in texts {
        let mut data = keyword.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(STANDARD.encode(text.as_bytes()).as_bytes());
        chunk(&mut out, b"tEXt", &data);
    }
    // One scanline: filter byte 0 and one grey pixel, zlib-compressed.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &[0, 0x80]).expect("writing to memory");
    let idat = z.finish().expect("writing to memory");
    chunk(&mut out, b"IDAT", &idat);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A PNG with raw (not base64) text chunks, for tests of bad input.
pub fn write_raw(texts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    for (keyword, text) in texts {
        let mut data = keyword.as_bytes().to_vec();
        data.push(0);
        data.extend_from_slice(text);
        chunk(&mut out, b"tEXt", &data);
    }
    chunk(&mut out, b"IEND", &[]);
    out
}
