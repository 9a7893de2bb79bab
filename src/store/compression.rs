//! zstd for blobs: compression contexts lent to the threads that add
//! blobs (bounded, reused), and decompression bounded by the length the
//! index states, so a damaged index cannot make a reader allocate 4 GiB.

use parking_lot::Mutex;

/// zstd level: fast, and within a few percent of level 6 on source trees.
pub const ZSTD_LEVEL: i32 = 3;

/// zstd level of disk chunks (16 KiB each, compressed one by one). On a
/// first backup of the 1.5 GiB binaries image zstd was 65 % of the CPU
/// (perf), and on chunks this small level 1 costs much less for a little
/// size. 300 MiB of each image, 16 KiB chunks, one thread (CPU s; stored
/// bytes as a fraction of the non-zero bytes):
///
/// | level | binaries image   | kernel-text image |
/// |-------|------------------|-------------------|
/// | 3     | 0.99 s, 0.2813   | 0.43 s, 0.0951    |
/// | 2     | 0.80 s, 0.2903   | 0.40 s, 0.0983    |
/// | 1     | 0.78 s, 0.2908   | 0.38 s, 0.0970    |
/// | −1    | 0.60 s, 0.331    | 0.33 s, 0.110     |
/// | −3    | 0.55 s, 0.392    | 0.31 s, 0.128     |
///
/// Level 1 takes 12–21 % less time for 2–3.4 % more bytes (a larger hash
/// table or minimum match changed nothing measurable); negative levels
/// lose far more size than they save time. Files' chunks (256 KiB–4 MiB)
/// stay at [`ZSTD_LEVEL`]. The half-sparse image's repository is 70.6 MB
/// against restic's 72.8 MB: a negative level would lose that row.
/// Skipping compression where a probe finds a chunk incompressible does
/// not pay either: of the first 600 MiB of the binaries image, 81 of
/// 34,790 non-zero chunks (0.2 %) do not save 1/32 at level 1, and a
/// level −5 probe of a chunk's first 4 KiB skipped 1,946 chunks, 1,865 of
/// them wrongly (stored bytes 0.362 instead of 0.344).
pub const ZSTD_LEVEL_DISK: i32 = 1;

/// How a disk's chunks are compressed: zstd level 1 where the data
/// compresses well (text, tables: the kernel-text image's repository must
/// stay small), an LZ4 block where it compresses poorly (machine code:
/// zstd was most of a first backup's CPU, and of the mount's when it is
/// read back, with each 16 KiB chunk a frame of its own).
///
/// The rule is sticky, because a disk's neighbouring chunks are mostly of
/// one kind (a file's blocks): while zstd brings chunks under 4/10 of
/// their size, the next chunk is zstd too; once one is not, the following
/// chunks are LZ4, until an LZ4 block comes under 4/10, when that chunk is
/// compressed again with zstd and zstd is kept for the next. Each reader
/// thread has its own codec, carried from one 1 MiB batch to the next.
///
/// Measured (a bench program; the rows zstd 1, LZ4 and this rule again
/// by the ignored test `tests::codec_table`, on a loaded machine: binaries
/// 0.98, 0.59 and 0.71 s, same fractions; all of the kernel-text image
/// 0.95, 0.53 and 0.83 s, LZ4 0.1889) on non-zero 16 KiB chunks: the first 300 MiB of the binaries
/// image, and all 463 MiB of the kernel-text image (its first 300 MiB
/// alone hid the loss of the 3/10 rule), one thread, CPU seconds to
/// compress, stored fraction, CPU seconds to decompress (lz4_flex 0.11
/// with its safe decoder, zstd 1.5.7; "sticky a, b": zstd kept while
/// under a, LZ4 turned back to zstd under b):
///
/// | rule                          | binaries image          | kernel-text image      |
/// |-------------------------------|-------------------------|------------------------|
/// | zstd 1 (session 9)            | 0.95 s, 0.364, 0.33 s   | 0.78 s, 0.1118, 0.26 s |
/// | zstd −1 (300 MiB of text)     | 0.75 s, 0.414, 0.22 s   | 0.50 s, 0.110 vs 0.097 |
/// | zstd −3 (300 MiB of text)     | 0.72 s, 0.477, 0.21 s   | 0.38 s, 0.127 vs 0.097 |
/// | LZ4 only (300 MiB of text)    | 0.55 s, 0.505, 0.12 s   | 0.25 s, 0.171 vs 0.097 |
/// | LZ4, zstd if LZ4 < 1/2        | 0.81 s, 0.441, 0.19 s   | 0.70 s, 0.097 (300 MiB)|
/// | sticky 3/10, 3/10             | 0.66 s, 0.464, 0.16 s   | 0.74 s, 0.1179, 0.24 s |
/// | sticky 3/10, 4/10             | 0.65 s, 0.448, 0.18 s   | 0.70 s, 0.1140, 0.26 s |
/// | sticky 3/10, 1/2              | 0.70 s, 0.433, 0.20 s   | 0.74 s, 0.1120, 0.26 s |
/// | **sticky 4/10, 4/10 (this)**  | 0.63 s, 0.438, 0.20 s   | 0.74 s, 0.1119, 0.26 s |
///
/// LZ4 alone loses the kernel-text image's repository (restic is only 3 %
/// above cbrfs there); trying LZ4 first on every chunk costs text both
/// codecs. This rule keeps text at zstd's size (+0.1 %) and CPU, and on
/// machine code takes a third less CPU to compress and 40 % less to
/// decompress, for 20 % more bytes (the binaries image's repository has
/// room: 559 MB against restic's 894 MB).
///
/// Whole backups, A/B against zstd 1 on every chunk (docs/bench/
/// session10-codec.md, loaded machine, page cache dropped, medians): the
/// binaries image's first backup 4.05 s of CPU against 4.86 s, its
/// repository 625 MB against 525 MB, the mount daemon's CPU for a cold
/// `cat` of it 1.78 s against 2.27 s; the kernel-text image unchanged
/// (backup 0.88 against 0.90 s of CPU, repository +0.04 %). LZ4 is then
/// 36 % of the backup's CPU and zstd 32 %: issue 17's 0.5× borg target
/// needs more than a codec.
///
/// Session 11 (cpu11): the LZ4 blocks come from liblz4 (`lz4` crate,
/// `LZ4_compress_default`) instead of lz4_flex's safe encoder; the
/// decoder is still lz4_flex's safe one. Measured by a bench program (the
/// LZ4 rows again by `tests::codec_table`), one thread, CPU seconds to
/// compress as the least of 7 runs (3 for the whole rules), loaded machine
/// (load average 6-9), same chunks as above:
///
/// | encoder                       | binaries, 300 MiB | kernel-text, all   |
/// |-------------------------------|-------------------|--------------------|
/// | lz4_flex, safe-encode (s. 10) | 0.63-0.67 s, 0.5054 | 0.45 s, 0.1889   |
/// | lz4_flex, unsafe encoder      | 0.49-0.51 s, 0.5054 | 0.46 s, 0.1889   |
/// | **liblz4, acceleration 1**    | 0.47-0.51 s, 0.5019 | 0.38-0.39 s, 0.1887 |
/// | liblz4, acceleration 2        | 0.44-0.47 s, 0.5180 | –                |
/// | DiskCodec, lz4_flex safe      | 0.71-0.78 s, 0.4380 | 0.75 s, 0.1119   |
/// | **DiskCodec, liblz4 (this)**  | 0.64-0.72 s, 0.4349 | 0.67-0.71 s, 0.1119 |
///
/// Acceleration 2 saves 6-10 % more for 3 % larger blocks: not taken.
/// zstd level 1 with parameters set for 16 KiB (window 14, hash and chain
/// 12-14, minimum match 5-6) measured 0.78-0.87 s against 0.85-0.93 s for
/// plain level 1 on the binaries image: within this machine's noise, and a
/// minimum match of 6 costs 3 % size; not taken (zstd already picks its
/// small-input parameters from the chunk's known size, and the context is
/// reused from [`compress_into_at`]'s pool, not made per chunk). Work the
/// sticky rule wastes on the binaries image's first 300 MiB: 438 of
/// 19,200 chunks (2.3 %) are compressed by LZ4 and then again by zstd,
/// about 0.01 s of 0.7 s; no probe can be cheaper than that.
///
/// Whole first backups, A/B against lz4_flex's safe encoder (docs/bench/
/// session11-cpu.md, loaded machine, page cache dropped, 15 alternating
/// runs): the binaries image 5.25 s of CPU against 5.52 s (−5 %), its
/// repository 620.5 MB against 624.9 MB; the kernel-text image unchanged
/// (1.15 s of CPU both, repository −0.01 %).
#[derive(Clone, Copy, Debug)]
pub struct DiskCodec {
    zstd: bool,
    /// LZ4 may be written: the vault's format says its readers know it
    /// (`VaultConfig::disk_lz4`). Without, every chunk is zstd level 1.
    lz4: bool,
}

impl Default for DiskCodec {
    fn default() -> Self {
        DiskCodec::new(true)
    }
}

impl DiskCodec {
    /// A codec that starts with zstd, and turns to LZ4 only if `lz4`.
    pub fn new(lz4: bool) -> DiskCodec {
        DiskCodec { zstd: true, lz4 }
    }

    /// Compress `data` into `out` (cleared first) and return the codec of
    /// `out` if it pays (saves at least 1/32, as [`compress_into`]), else
    /// `None` (store it raw).
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> Option<super::Compression> {
        use super::Compression;
        let well = |n: usize| n.saturating_mul(10) < data.len().saturating_mul(4);
        if self.zstd {
            let paid = compress_into_at(data, out, ZSTD_LEVEL_DISK);
            self.zstd = !self.lz4 || (paid && well(out.len()));
            return paid.then_some(Compression::Zstd);
        }
        out.clear();
        if data.len() <= 64 {
            return None;
        }
        let n = lz4_block_into(data, out)?;
        if well(n) {
            // Compressible after all: zstd for this chunk and the next.
            self.zstd = true;
            return compress_into_at(data, out, ZSTD_LEVEL_DISK).then_some(Compression::Zstd);
        }
        (n < data.len() - data.len() / 32).then_some(Compression::Lz4)
    }
}

/// Compress `data` into `out` (its capacity reused) as one LZ4 block with
/// liblz4's default acceleration, and return the block's length; `None`
/// (and `out` empty) if liblz4 fails, which it does only for inputs over
/// its 2 GiB limit. The block has no size prefix: the index states the
/// length, and [`decompress_lz4`] (lz4_flex's safe decoder) reads it.
fn lz4_block_into(data: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    out.clear();
    let bound = lz4::block::compress_bound(data.len()).ok()?;
    out.resize(bound, 0);
    match lz4::block::compress_to_buffer(data, None, false, out) {
        Ok(n) if n <= bound => {
            out.truncate(n);
            Some(n)
        }
        _ => {
            out.clear();
            None
        }
    }
}

/// Decompress one LZ4 block of exactly `cap` bytes. Only disks' chunks
/// are LZ4, so a `cap` above a chunk's largest size (a damaged index
/// length) is refused before anything is allocated, as is one the block
/// could not hold (LZ4 expands at most about 255 times).
pub(super) fn decompress_lz4(stored: &[u8], cap: usize) -> std::io::Result<Vec<u8>> {
    if cap > BULK_OUTPUT || cap > stored.len().saturating_mul(255).saturating_add(16) {
        return Err(std::io::Error::other(format!(
            "the index's length {cap} cannot come from a block of {} bytes",
            stored.len()
        )));
    }
    let mut out = take_buffer(cap);
    out.resize(cap, 0);
    // The output slice is exactly `cap`: a block that holds more fails
    // (its decoder checks every write), one that holds less is refused.
    let n = lz4_flex::block::decompress_into(stored, &mut out).map_err(std::io::Error::other)?;
    if n != cap {
        give_buffer(out);
        return Err(std::io::Error::other(format!(
            "its block holds {n} bytes, the index says {cap}"
        )));
    }
    Ok(out)
}

/// Decompress one LZ4 block into `dst`, returning the bytes it holds: a
/// block that holds more than `dst` fails (its decoder checks every
/// write). No buffer to zero first, unlike [`decompress_lz4`].
pub(super) fn decompress_lz4_to_slice(stored: &[u8], dst: &mut [u8]) -> std::io::Result<usize> {
    if dst.len() > BULK_OUTPUT {
        return Err(std::io::Error::other(format!(
            "the index's length {} is larger than a chunk",
            dst.len()
        )));
    }
    lz4_flex::block::decompress_into(stored, dst).map_err(std::io::Error::other)
}

/// Decompress one zstd frame into `dst`, returning the bytes it holds: a
/// frame that states another size, or holds more than `dst`, fails.
pub(super) fn decompress_to_slice(stored: &[u8], dst: &mut [u8]) -> std::io::Result<usize> {
    let cap = dst.len();
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(stored) {
        if n != cap as u64 {
            return Err(std::io::Error::other(format!(
                "its frame holds {n} bytes, the index says {cap}"
            )));
        }
    }
    if cap > BULK_OUTPUT {
        let v = decompress(stored, cap)?;
        let n = v.len();
        dst[..n].copy_from_slice(&v);
        return Ok(n);
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress_to_buffer(stored, dst),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

thread_local! {
    /// One zstd decompression context per thread: making one per blob
    /// costs more than decompressing a small chunk.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Largest output decompressed into a buffer allocated whole up front:
/// a data chunk's largest size. Larger blobs (big trees) are decompressed
/// into a buffer that grows with the output, so that a damaged `raw_len`
/// (up to 4 GiB, and not covered by any checksum on the read path) costs
/// at most this much memory, not `raw_len`.
const BULK_OUTPUT: usize = crate::chunker::MAX_SIZE;

/// Decompress one zstd frame of exactly `cap` bytes (shorter output is
/// returned for the caller to refuse; longer is an error).
pub(super) fn decompress(stored: &[u8], cap: usize) -> std::io::Result<Vec<u8>> {
    // A frame that states its size (cbrfs writes only such) must state
    // `cap`: a damaged length is refused before anything is allocated.
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(stored) {
        if n != cap as u64 {
            return Err(std::io::Error::other(format!(
                "its frame holds {n} bytes, the index says {cap}"
            )));
        }
    }
    if cap > BULK_OUTPUT {
        use std::io::Read;
        // Grows with what the frame really holds.
        let mut out = Vec::with_capacity(stored.len().saturating_mul(4).min(BULK_OUTPUT));
        zstd::stream::read::Decoder::with_buffer(stored)?
            .single_frame()
            .take(cap as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > cap {
            return Err(std::io::Error::other(format!(
                "it decompresses to more than {cap} bytes"
            )));
        }
        return Ok(out);
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => {
                // Into a buffer from the pool: a data chunk's output is
                // large enough to be mmapped if newly allocated.
                let mut out = take_buffer(cap);
                d.decompress_to_buffer(stored, &mut out)?;
                // A pooled buffer may be larger than `cap`: more output
                // than that is refused as before.
                if out.len() > cap {
                    return Err(std::io::Error::other(format!(
                        "it decompresses to more than {cap} bytes"
                    )));
                }
                Ok(out)
            }
            None => zstd::bulk::decompress(stored, cap),
        }
    })
}

/// Buffers of decoded chunks given back by the readers' chunk cache
/// ([`give_buffer`]) for the next chunks ([`take_buffer`]). glibc maps
/// every allocation of 256 KiB or more afresh (main.rs keeps that
/// threshold for the backup's memory), so each megabyte chunk decoded into
/// a new buffer cost 256 page faults, zeroed pages and an munmap: about a
/// fifth of the mount daemon's CPU in a `cat` of a large file (perf).
static POOL: Pool = Pool(Mutex::new(Vec::new()));

/// Smallest buffer worth keeping: below it glibc reuses freed memory.
const POOL_MIN: usize = 256 << 10;
/// Most bytes the pool keeps (a few dozen chunks of the average size).
const POOL_BYTES: usize = 32 << 20;

/// Free buffers, bounded in bytes.
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    /// A buffer with room for `cap` bytes, holding what it held when it
    /// was given back (or nothing).
    fn take(&self, cap: usize) -> Vec<u8> {
        if cap >= POOL_MIN / 2 {
            let mut pool = self.0.lock();
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= cap && b.capacity() <= cap.saturating_mul(2))
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            if let Some(i) = best {
                return pool.swap_remove(i);
            }
        }
        Vec::with_capacity(cap)
    }

    fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(POOL_MIN..=crate::chunker::MAX_SIZE + (64 << 10)).contains(&cap) {
            return;
        }
        // Not cleared: its bytes stay initialised for [`take_filled`].
        let mut pool = self.0.lock();
        let held: usize = pool.iter().map(|b| b.capacity()).sum();
        if held + cap <= POOL_BYTES {
            pool.push(buf);
        }
    }
}

/// An empty buffer with room for `cap` bytes: from the pool when one fits
/// (not more than twice as large), else new.
pub fn take_buffer(cap: usize) -> Vec<u8> {
    let mut b = POOL.take(cap);
    b.clear();
    b
}

/// A buffer of `len` bytes for a caller that overwrites every one of
/// them, with room for at least `min_cap` (so that it goes back to the
/// pool): from the pool when one fits, its old bytes left in place (only
/// what lies beyond its old length is zeroed), else new and zeroed. Each
/// request of the mount's reader is such a buffer (issue 17: zeroing each
/// request's megabyte before filling it cost about half as much as the
/// copy it replaced).
pub fn take_filled(len: usize, min_cap: usize) -> Vec<u8> {
    let mut b = POOL.take(len.max(min_cap));
    if b.len() >= len {
        b.truncate(len);
    } else {
        b.resize(len, 0);
    }
    b
}

/// Give a buffer no longer used back to the pool (dropped if it is small,
/// larger than a chunk, or the pool is full).
pub fn give_buffer(buf: Vec<u8>) {
    POOL.give(buf)
}

/// Free every buffer the pool keeps: the mount calls this once its reads
/// have stopped ([`crate::engine::reader::ChunkCache::release_if_idle`]),
/// so that an idle mount does not keep the pool's 32 MiB (issue 13).
pub fn release_buffers() {
    // Freed after the lock is let go: munmap of up to 32 MiB.
    drop(std::mem::take(&mut *POOL.0.lock()));
}

/// Bytes the pool keeps now.
pub fn pooled_bytes() -> usize {
    POOL.0.lock().iter().map(|b| b.capacity()).sum()
}

/// zstd compression contexts, lent one at a time. Each holds a few
/// megabytes of tables, so there are at most [`max_compressors`] of them,
/// however many threads read: more than the cores would only wait.
static COMPRESSORS: Mutex<Vec<zstd::bulk::Compressor<'static>>> = Mutex::new(Vec::new());
static COMPRESSORS_LENT: Mutex<usize> = Mutex::new(0);
static COMPRESSOR_BACK: parking_lot::Condvar = parking_lot::Condvar::new();

/// Asked once per process: `available_parallelism` is no cheap call on
/// Linux (it reads `/proc/self/cgroup` and the cgroup's CPU quota files,
/// about a dozen system calls), and it was asked on every compression
/// that found no context in the pool — about 20,000 times in the first
/// backup of a kernel tree, 1.8 % of its CPU samples
/// (docs/bench/session12-tree.md).
fn max_compressors() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()) + 1)
}

/// Compress `data` into `out` (cleared first; its capacity is reused) and
/// return true if the zstd form pays (saves at least 1/32). Thread-safe.
pub fn compress_into(data: &[u8], out: &mut Vec<u8>) -> bool {
    compress_into_at(data, out, ZSTD_LEVEL)
}

/// [`compress_into`] at zstd level `level`.
pub fn compress_into_at(data: &[u8], out: &mut Vec<u8>, level: i32) -> bool {
    out.clear();
    if data.len() <= 64 {
        return false;
    }
    let mut ctx = {
        let mut lent = COMPRESSORS_LENT.lock();
        loop {
            if let Some(c) = COMPRESSORS.lock().pop() {
                *lent += 1;
                break Some(c);
            }
            if *lent < max_compressors() {
                *lent += 1;
                break None;
            }
            COMPRESSOR_BACK.wait(&mut lent);
        }
    };
    if ctx.is_none() {
        ctx = zstd::bulk::Compressor::new(level).ok();
    }
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    // A pooled context keeps the level it was last used at: set it (a
    // parameter store, no allocation).
    let ok = match ctx.as_mut() {
        Some(c) => {
            c.set_compression_level(level).is_ok() && c.compress_to_buffer(data, out).is_ok()
        }
        None => false,
    };
    {
        let mut lent = COMPRESSORS_LENT.lock();
        *lent -= 1;
        if let Some(c) = ctx {
            COMPRESSORS.lock().push(c);
        }
        COMPRESSOR_BACK.notify_one();
    }
    ok && out.len() < data.len() - data.len() / 32
}

/// The zstd form of a blob if it pays (saves at least 1/32), else `None`.
pub fn compress_blob(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    compress_into(data, &mut out).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer given back is taken again for a chunk it fits, not for
    /// one it is more than twice the size of; small ones are not kept, nor
    /// more than the pool's bytes.
    #[test]
    fn the_pool_lends_buffers_that_fit() {
        let pool = Pool(Mutex::new(Vec::new()));
        let mut b = Vec::with_capacity(1 << 20);
        b.extend_from_slice(&[7u8; 1000]);
        let ptr = b.as_ptr();
        pool.give(b);
        let other = pool.take(400 << 10);
        assert!(other.as_ptr() != ptr, "more than twice the size");
        let again = pool.take(600 << 10);
        assert_eq!(again.as_ptr(), ptr);
        // Its old bytes are kept for `take_filled`; `take_buffer` clears.
        assert!(again.len() == 1000 && again.capacity() >= 600 << 10);
        pool.give(Vec::with_capacity(4096));
        assert!(pool.0.lock().is_empty(), "a small buffer was kept");
        for _ in 0..100 {
            pool.give(Vec::with_capacity(1 << 20));
        }
        let held: usize = pool.0.lock().iter().map(|b| b.capacity()).sum();
        assert!(held <= POOL_BYTES, "{held}");
    }

    /// A context lent at one level and then at another compresses at the
    /// level asked: the same bytes as a fresh compressor at that level.
    #[test]
    fn each_call_compresses_at_its_own_level() {
        let data: Vec<u8> = (0..16_384u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3f)
            .collect();
        for level in [ZSTD_LEVEL, ZSTD_LEVEL_DISK, ZSTD_LEVEL, ZSTD_LEVEL_DISK] {
            let mut out = Vec::new();
            assert!(compress_into_at(&data, &mut out, level));
            let want = zstd::bulk::Compressor::new(level)
                .unwrap()
                .compress(&data)
                .unwrap();
            assert_eq!(out, want, "level {level}");
            assert_eq!(decompress(&out, data.len()).unwrap(), data);
        }
        let mut one = Vec::new();
        let mut three = Vec::new();
        assert!(compress_into_at(&data, &mut one, 1) && compress_into_at(&data, &mut three, 3));
        assert_ne!(
            one, three,
            "the levels give the same frame: the test shows nothing"
        );
    }

    /// Decompressing into a pooled buffer larger than the length asked
    /// still refuses a frame that holds more (a damaged index's length).
    #[test]
    fn a_larger_pooled_buffer_does_not_admit_a_longer_frame() {
        let data = vec![3u8; 300_000];
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let frame = enc.finish().unwrap();
        for _ in 0..4 {
            give_buffer(Vec::with_capacity(400_000));
        }
        assert!(decompress(&frame, 299_999).is_err());
        assert_eq!(decompress(&frame, 300_000).unwrap(), data);
    }

    /// Bytes like machine code: poorly compressible. Half of its 8-byte
    /// words are from a table of 256 (matches for LZ4), half are random:
    /// roughly half the size under either codec, not under 4/10.
    fn code_like(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let table: Vec<u64> = (0..256).map(|_| next()).collect();
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            let r = next();
            let w = if r & 1 == 0 {
                table[(r >> 8) as usize & 255]
            } else {
                next()
            };
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.truncate(len);
        v
    }

    /// Text-like bytes: well under 4/10 under zstd and LZ4.
    fn text_like(len: usize) -> Vec<u8> {
        let words = [
            "static ", "int ", "return ", "struct ", "(void)", ";\n", "{\n", "}\n",
        ];
        let mut v = Vec::new();
        let mut i = 0usize;
        while v.len() < len {
            v.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    /// The disk codec keeps zstd for text, turns to LZ4 after a chunk
    /// that compresses poorly, and back to zstd when LZ4 finds a chunk
    /// compressible; every form decodes to its chunk.
    #[test]
    fn the_disk_codec_follows_the_data() {
        use crate::store::Compression;
        let text = text_like(16 << 10);
        let code = code_like(16 << 10, 7);
        let mut c = DiskCodec::default();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for data in [&text, &code, &code, &text, &text] {
            let how = c.compress(data, &mut out);
            let back = match how {
                Some(Compression::Zstd) => decompress(&out, data.len()).unwrap(),
                Some(Compression::Lz4) => decompress_lz4(&out, data.len()).unwrap(),
                _ => panic!("{how:?}: every chunk here pays"),
            };
            assert_eq!(&back, data);
            seen.push(how.unwrap());
        }
        use Compression::{Lz4, Zstd};
        // code after text: zstd (the state was zstd), then LZ4; text after
        // LZ4: compressed again with zstd, and zstd stays.
        assert_eq!(seen, [Zstd, Zstd, Lz4, Zstd, Zstd]);
        // Incompressible: stored raw, by either codec.
        let noise = crate::fsutil::random_bytes(16 << 10);
        let mut c = DiskCodec {
            zstd: false,
            lz4: true,
        };
        assert_eq!(c.compress(&noise, &mut out), None);
        // A vault made before LZ4: zstd for every chunk, whatever comes.
        let mut old = DiskCodec::new(false);
        for data in [&code, &noise, &code, &text] {
            let how = old.compress(data, &mut out);
            assert_ne!(how, Some(Lz4), "an LZ4 block in a vault of format 1 or 2");
        }
        assert_eq!(old.compress(&code, &mut out), Some(Zstd));
    }

    /// liblz4's blocks (the encoder) are read back by lz4_flex's safe
    /// decoder (the reader) to the same bytes, for every kind of chunk and
    /// the lengths a disk's chunks have (its last chunk may be short).
    #[test]
    fn liblz4_blocks_decode_with_the_safe_decoder() {
        let mut out = Vec::new();
        let mut kinds = 0;
        for len in [65, 100, 4096, 12_345, (16 << 10) - 1, 16 << 10, 64 << 10] {
            let mut zeros_and_code = code_like(len, 11);
            zeros_and_code[..len / 2].fill(0);
            let datas = [
                code_like(len, len as u64),
                text_like(len),
                zeros_and_code,
                crate::fsutil::random_bytes(len),
            ];
            for data in &datas {
                let n = lz4_block_into(data, &mut out).expect("liblz4 compresses");
                assert_eq!(n, out.len());
                assert_eq!(&decompress_lz4(&out, data.len()).unwrap(), data, "{len}");
                // A block is no lz4_flex-only dialect: the other encoder's
                // block of the same bytes decodes to them too.
                let theirs = lz4_flex::block::compress(data);
                assert_eq!(&decompress_lz4(&theirs, data.len()).unwrap(), data);
                kinds += 1;
            }
        }
        assert_eq!(kinds, 28);
        // The buffer's old contents do not leak into the next block.
        out.clear();
        out.extend_from_slice(&[9u8; 100_000]);
        let data = text_like(16 << 10);
        let n = lz4_block_into(&data, &mut out).unwrap();
        assert!(n < data.len() / 4, "{n}");
        assert_eq!(decompress_lz4(&out, data.len()).unwrap(), data);
    }

    /// A damaged LZ4 block or a wrong length is an error, never other
    /// bytes of the right length, and a huge length allocates nothing.
    #[test]
    fn a_damaged_lz4_block_is_refused() {
        let data = code_like(16 << 10, 3);
        let block = lz4_flex::block::compress(&data);
        assert_eq!(decompress_lz4(&block, data.len()).unwrap(), data);
        assert!(decompress_lz4(&block, data.len() - 1).is_err());
        assert!(decompress_lz4(&block, data.len() + 1).is_err());
        assert!(decompress_lz4(&block[..block.len() - 9], data.len()).is_err());
        let (r, largest) =
            crate::testkit::largest_alloc(|| decompress_lz4(&block, u32::MAX as usize));
        assert!(r.is_err() && largest < 1 << 20, "{largest}");
        // Every single-byte change either fails or gives other bytes (which
        // the id check after decoding refuses): never a panic.
        for i in 0..block.len() {
            let mut b = block.clone();
            b[i] ^= 0x5a;
            if let Ok(v) = decompress_lz4(&b, data.len()) {
                assert_eq!(v.len(), data.len());
            }
        }
    }

    /// CPU seconds (user and system) this thread has used: the
    /// measurement tables below time their codecs with it.
    fn thread_cpu() -> f64 {
        // SAFETY: getrusage fills the struct it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    }

    /// The measurement behind [`DiskCodec`]'s table, on an image named by
    /// `CBRFS_CODEC_BENCH_IMG` (its first `CBRFS_CODEC_BENCH_MIB` MiB of
    /// non-zero 16 KiB chunks, 300 by default): CPU seconds to compress,
    /// stored fraction, CPU seconds to decompress, for zstd 1, LZ4 and
    /// this rule. Run with `cargo test --release --lib codec_table --
    /// --ignored --nocapture`.
    #[test]
    #[ignore]
    fn codec_table() {
        use crate::store::Compression;
        use std::io::Read;
        let Ok(path) = std::env::var("CBRFS_CODEC_BENCH_IMG") else {
            eprintln!("set CBRFS_CODEC_BENCH_IMG to an image");
            return;
        };
        let mib: usize = std::env::var("CBRFS_CODEC_BENCH_MIB")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(300);
        let cpu = thread_cpu;
        let mut f = std::fs::File::open(&path).unwrap();
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        while chunks.len() * buf.len() < mib << 20 && f.read_exact(&mut buf).is_ok() {
            if buf.iter().any(|b| *b != 0) {
                chunks.push(buf.clone());
            }
        }
        let total = (chunks.len() * buf.len()) as f64;
        type Rule = Box<dyn FnMut(&[u8], &mut Vec<u8>) -> Option<Compression>>;
        let mut codec = DiskCodec::default();
        let rules: Vec<(&str, Rule)> = vec![
            (
                "zstd 1",
                Box::new(|d, o| {
                    compress_into_at(d, o, ZSTD_LEVEL_DISK).then_some(Compression::Zstd)
                }),
            ),
            (
                "LZ4 (lz4_flex safe encoder, session 10)",
                Box::new(|d, o| {
                    *o = lz4_flex::block::compress(d);
                    (o.len() < d.len() - d.len() / 32).then_some(Compression::Lz4)
                }),
            ),
            (
                "LZ4 (liblz4)",
                Box::new(|d, o| {
                    let n = lz4_block_into(d, o)?;
                    (n < d.len() - d.len() / 32).then_some(Compression::Lz4)
                }),
            ),
            ("DiskCodec", Box::new(move |d, o| codec.compress(d, o))),
        ];
        for (name, mut rule) in rules {
            let t = cpu();
            let stored: Vec<(Option<Compression>, Vec<u8>)> = chunks
                .iter()
                .map(|c| {
                    let mut o = Vec::new();
                    (rule(c, &mut o), o)
                })
                .collect();
            let enc = cpu() - t;
            let bytes: usize = stored
                .iter()
                .zip(&chunks)
                .map(|((how, o), c)| if how.is_some() { o.len() } else { c.len() })
                .sum();
            let t = cpu();
            for ((how, o), c) in stored.iter().zip(&chunks) {
                let back = match how {
                    Some(Compression::Zstd) => decompress(o, c.len()).unwrap(),
                    Some(Compression::Lz4) => decompress_lz4(o, c.len()).unwrap(),
                    _ => c.clone(),
                };
                assert!(back == *c);
                give_buffer(back);
            }
            let dec = cpu() - t;
            println!(
                "| {name} | {enc:.2} s | {:.4} | {dec:.2} s |",
                bytes as f64 / total
            );
        }
    }

    /// The LZ4 decoders on an image's chunks that LZ4 stores (one thread,
    /// CPU seconds, least of 5): lz4_flex's safe decoder (what reads run)
    /// against liblz4's `LZ4_decompress_safe`. Run with
    /// `CBRFS_CODEC_BENCH_IMG=IMG cargo test --release --lib
    /// lz4_decoder_table -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn lz4_decoder_table() {
        use std::io::Read;
        let Ok(path) = std::env::var("CBRFS_CODEC_BENCH_IMG") else {
            eprintln!("set CBRFS_CODEC_BENCH_IMG to an image");
            return;
        };
        let cpu = thread_cpu;
        let mut f = std::fs::File::open(&path).unwrap();
        let mut blocks = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        let mut raw = 0usize;
        while raw < 300 << 20 && f.read_exact(&mut buf).is_ok() {
            let mut o = Vec::new();
            if let Some(n) = lz4_block_into(&buf, &mut o) {
                if n < buf.len() - buf.len() / 32 {
                    blocks.push(o);
                    raw += buf.len();
                }
            }
        }
        let mut out = vec![0u8; 16 << 10];
        let mut best = [f64::MAX; 3];
        for _ in 0..5 {
            let t = cpu();
            for b in &blocks {
                let got = decompress_lz4(b, 16 << 10).unwrap();
                give_buffer(got);
            }
            best[0] = best[0].min(cpu() - t);
            let t = cpu();
            for b in &blocks {
                lz4_flex::block::decompress_into(b, &mut out).unwrap();
            }
            best[1] = best[1].min(cpu() - t);
            let t = cpu();
            for b in &blocks {
                lz4::block::decompress_to_buffer(b, Some(16 << 10), &mut out).unwrap();
            }
            best[2] = best[2].min(cpu() - t);
        }
        println!(
            "{} MiB in {} blocks: decompress_lz4 {:.3} s, lz4_flex into {:.3} s, liblz4 {:.3} s",
            raw >> 20,
            blocks.len(),
            best[0],
            best[1],
            best[2]
        );
    }
}
