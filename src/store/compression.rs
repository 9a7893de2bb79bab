//! zstd for blobs: compression contexts lent to the threads that add
//! blobs (bounded, reused), and decompression bounded by the length the
//! index states, so a damaged index cannot make a reader allocate 4 GiB.

use parking_lot::Mutex;

/// zstd level: fast, and within a few percent of level 6 on source trees.
pub const ZSTD_LEVEL: i32 = 3;

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
            Some(d) => d.decompress(stored, cap),
            None => zstd::bulk::decompress(stored, cap),
        }
    })
}

/// zstd compression contexts, lent one at a time. Each holds a few
/// megabytes of tables, so there are at most [`max_compressors`] of them,
/// however many threads read: more than the cores would only wait.
static COMPRESSORS: Mutex<Vec<zstd::bulk::Compressor<'static>>> = Mutex::new(Vec::new());
static COMPRESSORS_LENT: Mutex<usize> = Mutex::new(0);
static COMPRESSOR_BACK: parking_lot::Condvar = parking_lot::Condvar::new();

fn max_compressors() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// Compress `data` into `out` (cleared first; its capacity is reused) and
/// return true if the zstd form pays (saves at least 1/32). Thread-safe.
pub fn compress_into(data: &[u8], out: &mut Vec<u8>) -> bool {
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
        ctx = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
    }
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    let ok = match ctx.as_mut() {
        Some(c) => c.compress_to_buffer(data, out).is_ok(),
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
