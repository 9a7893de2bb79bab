//! Chunkers: content-defined (FastCDC, gear table seeded per vault) for
//! files, fixed-size for disks.
//!
//! The CDC chunker keeps one large buffer and cuts in place, so a chunk is a
//! slice of the buffer, not a fresh allocation.

use fastcdc::v2020::{cut_gear, get_gear_with_seed, logarithm2, Normalization, MASKS};
use std::io::{self, Read};

/// Smallest chunk (except a file's last).
pub const MIN_SIZE: usize = 256 << 10;
/// Average chunk.
pub const AVG_SIZE: usize = 1 << 20;
/// Largest chunk.
pub const MAX_SIZE: usize = 4 << 20;

/// The buffer [`Cdc::split_with`] wants for an input of `size_hint` bytes:
/// the whole input and one byte (to see its end in one pass) when that is
/// less than two of the largest chunks, else two of them, so that a refill
/// copies at most as much as it reads.
pub fn buffer_len(size_hint: u64) -> usize {
    let two = 2 * MAX_SIZE;
    if size_hint < two as u64 {
        (size_hint as usize + 1).max(4096)
    } else {
        two
    }
}

/// FastCDC parameters with a vault's gear table.
pub struct Cdc {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl Cdc {
    /// A chunker whose gear table is XORed with `seed`.
    pub fn new(seed: u64) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let bits = logarithm2(AVG_SIZE as u32);
        let norm = Normalization::Level1.bits();
        Cdc {
            gear,
            gear_ls,
            mask_s: MASKS[(bits + norm) as usize],
            mask_l: MASKS[(bits - norm) as usize],
        }
    }

    /// Length of the next chunk at the start of `data`: the content-defined
    /// cut point, or all of `data` when it is no longer than MIN_SIZE or
    /// ends before a cut. The caller passes at least MAX_SIZE bytes unless
    /// `data` is the rest of the input, so a cut is never decided by where
    /// a read happened to stop.
    pub fn cut(&self, data: &[u8]) -> usize {
        let (_, n) = cut_gear(
            data,
            MIN_SIZE,
            AVG_SIZE,
            MAX_SIZE,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n.max(1).min(data.len())
    }

    /// Split everything `src` yields into chunks, calling `f(offset, chunk)`
    /// for each in order.
    pub fn split<R: Read, F>(&self, src: R, f: F) -> io::Result<u64>
    where
        F: FnMut(u64, &[u8]) -> io::Result<()>,
    {
        self.split_with(src, &mut Vec::new(), u64::MAX, f)
    }

    /// [`Cdc::split`] with a caller's buffer, reused across files: a backup
    /// of many small files must not allocate (and fault in) megabytes per
    /// file. `size_hint` is the input's expected length: the buffer grows
    /// to [`buffer_len`] of it. The cuts do not depend on the buffer as long
    /// as the input is no longer than `size_hint` (a cut is made with
    /// `MAX_SIZE` bytes ahead or at the end of the input); an input that
    /// grew past it is still split whole, at cuts that may differ.
    pub fn split_with<R: Read, F>(
        &self,
        mut src: R,
        buf: &mut Vec<u8>,
        size_hint: u64,
        mut f: F,
    ) -> io::Result<u64>
    where
        F: FnMut(u64, &[u8]) -> io::Result<()>,
    {
        let want = buffer_len(size_hint);
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let cap = buf.len();
        let (mut start, mut end) = (0usize, 0usize);
        let mut eof = false;
        let mut offset = 0u64;
        loop {
            // Refill so that at least MAX_SIZE bytes are ahead, unless EOF.
            if !eof && end - start < MAX_SIZE {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < cap {
                    match src.read(&mut buf[end..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            if start == end {
                return Ok(offset);
            }
            let n = self.cut(&buf[start..end]);
            f(offset, &buf[start..start + n])?;
            offset += n as u64;
            start += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::pseudo_random;

    fn chunks(cdc: &Cdc, data: &[u8]) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        cdc.split(data, |o, c| {
            out.push((o, c.len()));
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let cdc = Cdc::new(42);
        let data = pseudo_random(20 << 20, 1);
        let cs = chunks(&cdc, &data);
        let mut pos = 0;
        for (i, (o, n)) in cs.iter().enumerate() {
            assert_eq!(*o, pos);
            assert!(*n <= MAX_SIZE);
            if i + 1 < cs.len() {
                assert!(*n >= MIN_SIZE);
            }
            pos += *n as u64;
        }
        assert_eq!(pos, data.len() as u64);
        assert!(cs.len() > 5 && cs.len() < 60, "{} chunks", cs.len());
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let cdc = Cdc::new(7);
        let data = pseudo_random(16 << 20, 2);
        let mut changed = data.clone();
        changed.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
        let set = |d: &[u8]| {
            let mut s = std::collections::HashSet::new();
            cdc.split(d, |_, c| {
                s.insert(xxhash_rust::xxh3::xxh3_64(c));
                Ok(())
            })
            .unwrap();
            s
        };
        let a = set(&data);
        let b = set(&changed);
        let new = b.difference(&a).count();
        assert!(new <= 2, "{new} new chunks of {}", b.len());
    }

    #[test]
    fn cuts_do_not_depend_on_the_buffer() {
        let cdc = Cdc::new(3);
        let whole = chunks(&cdc, &pseudo_random(3 * MAX_SIZE + 12345, 9));
        for len in [0, 1, 4095, 4097, MIN_SIZE + 1, MAX_SIZE, 2 * MAX_SIZE + 7] {
            let data = pseudo_random(len, 9);
            let mut buf = Vec::new();
            let mut got = Vec::new();
            cdc.split_with(&data[..], &mut buf, len as u64, |o, c| {
                got.push((o, c.len()));
                Ok(())
            })
            .unwrap();
            assert_eq!(got, chunks(&cdc, &data), "len {len}");
            assert!(buf.len() <= buffer_len(len as u64), "len {len}");
        }
        // An input longer than its hint (a file that grew) is split whole.
        let data = pseudo_random(3 * MAX_SIZE + 12345, 9);
        let mut got = 0u64;
        let n = cdc
            .split_with(&data[..], &mut Vec::new(), 1000, |o, c| {
                assert_eq!(o, got);
                got += c.len() as u64;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(!whole.is_empty());
    }

    #[test]
    fn empty_and_tiny_inputs() {
        let cdc = Cdc::new(0);
        assert!(chunks(&cdc, &[]).is_empty());
        assert_eq!(chunks(&cdc, b"abc"), vec![(0, 3)]);
    }
}
