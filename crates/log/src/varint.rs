//! LEB128 unsigned integers: instruction-count deltas and lengths are small, so most take a byte
//! or two. Decoding rejects encodings longer than ten bytes or overflowing 64 bits.

pub fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes from the front of `buf`: the value and the bytes it took, or `None` if the buffer
/// ends first or the encoding is invalid.
pub fn get(buf: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        let bits = (b & 0x7f) as u64;
        if i == 9 && b > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = vec![];
            put(&mut b, v);
            assert_eq!(get(&b), Some((v, b.len())));
            assert_eq!(get(&b[..b.len() - 1]), None);
        }
        assert_eq!(get(&[0xff; 11]), None);
        assert_eq!(
            get(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }
}
